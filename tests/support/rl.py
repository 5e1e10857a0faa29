"""A reward source for RL tests whose rewards vary within a group even for a random tiny model."""

from __future__ import annotations

import json

import torch

from lit_ft.modules.rl import Rollouts


class EvenTokenReward:
    """The fraction of even token ids in each completion: sampled completions differ, so their rewards do (a random
    tiny model rarely ends a completion, so their lengths would not)."""

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        return torch.tensor([sum(i % 2 == 0 for i in ids) / len(ids) for ids in rollouts.completion_ids])


class TaskTypeReward:
    """1 for the completions of prompts of ``task_type``, else 0: rewards known in advance, per task."""

    def __init__(self, task_type: str) -> None:
        self.task_type = task_type

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        return torch.tensor([float(task == self.task_type) for task in rollouts.task_types])


class RecordingReward(EvenTokenReward):
    """:class:`EvenTokenReward` that also appends what it scored to ``path`` (a JSON line per call: the completions'
    token ids and text, the references, the tokenizer's EOS id), for a test to read from a subprocess run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        seen = {
            "completion_ids": rollouts.completion_ids,
            "completions": rollouts.completions,
            "references": rollouts.references,
            "eos_token_id": rollouts.tokenizer.eos_token_id,
        }
        with open(self.path, "a") as file:
            file.write(json.dumps(seen) + "\n")
        return super().__call__(rollouts)

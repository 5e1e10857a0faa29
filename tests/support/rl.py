"""A reward source for RL tests whose rewards vary within a group even for a random tiny model."""

from __future__ import annotations

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

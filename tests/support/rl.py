"""A reward source for RL tests whose rewards vary within a group even for a random tiny model."""

from __future__ import annotations

import torch

from lit_ft.modules.rl import Rollouts


class LengthReward:
    """The number of tokens of each completion (sampled lengths differ, so advantages are not all zero)."""

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        return torch.tensor([float(len(ids)) for ids in rollouts.completion_ids])

"""A mean per group, summed over updates and ranks: the per-task loss of training (``TaskMetrics``) and of
``eval.py`` (:func:`lit_ft.eval.loss.task_losses`), one definition for both."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric


class GroupedMean(Metric):
    """Mean of values per group: ``total[g] / count[g]``, with ``total`` and ``count`` summed over updates and ranks.

    Fed with per-token losses grouped by task id it is the token-weighted loss per task type (every token of
    every micro-batch counts once, so it is right under packing and gradient accumulation).
    """

    full_state_update = False

    def __init__(self, num_groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_groups = num_groups
        self.add_state("total", torch.zeros(num_groups, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(num_groups, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, groups: torch.Tensor) -> None:
        """``values`` and ``groups`` [N]; entries with a negative group (padding) are skipped."""
        keep = groups >= 0
        # one-hot sums instead of bincount/scatter: deterministic on every device
        onehot = F.one_hot(groups[keep], self.num_groups).to(torch.float64)
        self.total += values[keep].to(torch.float64) @ onehot
        self.count += onehot.sum(0)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, count)``, both [G]; the mean is NaN where a group had no values."""
        return self.total / self.count, self.count

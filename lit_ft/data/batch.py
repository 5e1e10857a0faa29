"""Read counts off a batch that follows the batch contract (padded or packed): tokens and examples."""

from __future__ import annotations

import torch

Batch = dict[str, torch.Tensor]


def non_padding_tokens(batch: Batch) -> torch.Tensor:
    """Tokens that are not padding: ``attention_mask`` ones (padded batches), else ``task_ids >= 0`` (packed)."""
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].sum()
    return (batch["task_ids"] >= 0).sum()


def example_task_ids(batch: Batch) -> torch.Tensor:
    """The task id of every example in the batch, [E] long.

    A padded batch holds one example per row (its task is ``task_ids[:, 0]``); a packed batch holds one example
    per run of ``position_ids`` restarting at 0 (the padding after a pack is a run with task id -1, skipped).
    """
    task_ids = batch["task_ids"]
    if batch.get("position_ids") is not None:
        starts = (batch["position_ids"] == 0) & (task_ids >= 0)
        return task_ids[starts]
    first = task_ids[:, 0]
    return first[first >= 0]

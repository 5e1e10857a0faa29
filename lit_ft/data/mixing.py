"""Data mixtures: several datasets drawn in set proportions, each optionally relabelled with its own task type."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lit_ft.data.sources import Sources, source_list

T = TypeVar("T")


@dataclass
class DataSource:
    """One dataset of a mixture.

    Args:
        files: its training data: one source or several, each a path or a mapping (:mod:`lit_ft.data.sources`).
        weight: its share of the training examples (weights are normalised over the mixture).
        task_type: overrides every row's ``task_type`` (validation rows too), so callbacks report the source
            apart (``val/loss/general``); ``None`` keeps the rows' own.
        val_files: its validation data (the same spelling); without it the data module's ``val_ratio`` holds out
            a share.
        name: shown in logs and the summary (default: the task type, else the first source's file or dataset
            name).
    """

    files: Sources
    weight: float = 1.0
    task_type: str | None = None
    val_files: Sources = None
    name: str | None = None

    @classmethod
    def of(cls, value: DataSource | Mapping[str, Any]) -> DataSource:
        return value if isinstance(value, DataSource) else cls(**dict(value))

    @property
    def label(self) -> str:
        if self.name or self.task_type:
            return self.name or self.task_type
        sources = source_list(self.files)
        return sources[0].stem if sources else "source"


def mixture_counts(weights: Sequence[float], total: int) -> list[int]:
    """Split ``total`` draws in proportion to ``weights``, rounding by largest remainder (the counts sum to
    ``total`` and each is within 1 of ``total * w_i / sum(w)``)."""
    if not weights or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
    shares = [total * w / sum(weights) for w in weights]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def sample_mixture(groups: Sequence[Sequence[T]], weights: Sequence[float], total: int, seed: int) -> list[T]:
    """Draw ``total`` items, ``mixture_counts(weights, total)[i]`` of them from ``groups[i]``, in random order.

    Within a group, items come in shuffled passes: none repeats before all of its group has been drawn once
    (a small source is upsampled by whole passes, a large one downsampled to a random subset).
    """
    rng = random.Random(seed)
    drawn: list[T] = []
    for group, count in zip(groups, mixture_counts(weights, total)):
        if count and not group:
            raise ValueError("a mixture source with a positive weight has no examples")
        while count > 0:
            order = list(group)
            rng.shuffle(order)
            drawn += order[:count]
            count -= len(order)
    rng.shuffle(drawn)
    return drawn

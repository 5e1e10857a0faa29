"""A training loader that serves each batch several times in a row: online RL's several optimisation passes over
one batch of rollouts (TRL's GRPO repeats its prompts the same way), one optimizer step per pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader


class RepeatedBatches:
    """Yield every batch of ``loader`` ``repeats`` times in a row (the same object, not a copy).

    ``len()`` is ``repeats * len(loader)``: what Lightning counts an epoch's training steps against. Lightning
    passes any iterable that is not a ``DataLoader`` through untouched, and finds the sampler for ``set_epoch``
    by the ``sampler`` attribute; ``batch_size`` is the loader's (LR scaling reads it). :meth:`resume` makes
    the next iteration serve its first batch only the repeats still due, for a run resumed between two passes.
    """

    def __init__(self, loader: DataLoader, repeats: int) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.loader, self.repeats = loader, repeats
        self._done = 0  # repeats of the first batch already served before a resume

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    def __len__(self) -> int:
        return self.repeats * len(self.loader)

    def resume(self, done: int) -> None:
        """Serve the next iteration's first batch ``repeats - done`` times only."""
        if not 0 <= done < self.repeats:
            raise ValueError(f"done must be in [0, {self.repeats}), got {done}")
        self._done = done

    def __iter__(self) -> Iterator[Any]:
        done, self._done = self._done, 0  # only the first iteration after a resume starts part-way
        for batch in self.loader:
            for _ in range(self.repeats - done):
                yield batch
            done = 0

"""A training sampler whose order is a pure function of (seed, epoch, rank), so a run can resume mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """Shuffle each epoch with the permutation seeded by ``seed + epoch`` (this rank's share), optionally
    starting part-way into an epoch.

    The order depends on nothing but the seed, the epoch, the number of ranks and the rank (not on the global
    RNG), so a resumed run reproduces it; :meth:`resume` makes the next iteration start after the samples
    already trained on. It is a ``DistributedSampler``, so Lightning keeps it under DDP/FSDP instead of
    replacing it, and calls :meth:`set_epoch` at every epoch start. ``len()`` stays the full epoch, which is what
    Lightning counts batches against.
    """

    def __init__(self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._skip = 0

    def resume(self, epoch: int, skip: int) -> None:
        """Make the next iteration yield epoch ``epoch``'s order without its first ``skip`` samples."""
        self.set_epoch(epoch)
        self._skip = skip

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0  # only the first iteration after a resume starts late
        return iter(indices[skip:])

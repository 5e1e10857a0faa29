"""Training samplers whose order is a pure function of (seed, epoch, rank), so a run can resume mid-epoch:
shuffled, or grouped by length (batches of similar length, little padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

import torch
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

    def epoch_indices(self) -> list[int]:
        """This rank's share of the epoch's order (``DistributedSampler``'s seeded shuffle)."""
        return list(super().__iter__())

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        skip, self._skip = self._skip, 0  # only the first iteration after a resume starts late
        return iter(indices[skip:])


class LengthGroupedSampler(ResumableSampler):
    """A :class:`ResumableSampler` whose epoch order puts examples of similar length in the same batches.

    Each epoch (seeded by ``seed + epoch``): a shuffle, cut into mega-batches of ``mega_batch_factor`` global
    batches (``batch_size * num_replicas`` examples), each sorted by length (longest first) and cut into global
    batches; the full global batches are shuffled and the one holding the longest example goes first (an
    out-of-memory shows at the first step). Randomness stays at the scale of a mega-batch, as in Hugging Face's
    sampler of the same name. Ranks take the order in a stride (rank ``r``: positions ``r, r + W, ...``), so
    every rank's ``i``-th batch comes from the ``i``-th global batch: grouping survives the sharding.
    """

    def __init__(
        self,
        dataset: Sized,
        lengths: Sequence[int],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        mega_batch_factor: int = 50,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        if batch_size < 1 or mega_batch_factor < 1 or len(lengths) != len(dataset):
            raise ValueError("need batch_size >= 1, mega_batch_factor >= 1 and one length per example")
        self.lengths, self.mega_batch_factor = list(lengths), mega_batch_factor
        self.group_size = batch_size * num_replicas

    def global_order(self) -> list[int]:
        """The epoch's order over all ranks."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.group_size * self.mega_batch_factor
        groups = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            groups += [chunk[i : i + self.group_size] for i in range(0, len(chunk), self.group_size)]
        # A short group (only the last mega-batch can end with one) stays last, so groups stay aligned to ranks.
        tail = [groups.pop()] if groups and len(groups[-1]) < self.group_size else []
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        if groups:
            longest = max(range(len(groups)), key=lambda g: self.lengths[groups[g][0]])
            groups.insert(0, groups.pop(longest))
        return [index for group in groups + tail for index in group]

    def epoch_indices(self) -> list[int]:
        order = self.global_order()
        order += order[: self.total_size - len(order)]  # as DistributedSampler pads: every rank gets as many
        return order[self.rank : self.total_size : self.num_replicas]

"""Put several examples in one sequence: best-fit packing to a fixed length, and the concatenation both use."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from lit_ft.data.batch import IGNORE_INDEX, PackedExample, TokenizedExample

PACKED_KEYS = ("input_ids", "labels", "task_ids")


def concatenate_examples(examples: Sequence[TokenizedExample | PackedExample]) -> PackedExample:
    """One sequence holding ``examples`` back to back, with ``position_ids`` restarting at 0 for each.

    The label of each example's first token becomes -100: in a padded batch position 0 is never a target,
    and here it would be predicted from the previous example's last token. So a concatenated batch has
    exactly the targets (and, with attention kept inside each example, the losses) of the padded batch.
    Examples that already carry ``position_ids`` (packs) keep their own segments.
    """
    out: PackedExample = {key: [] for key in (*PACKED_KEYS, "position_ids")}
    for example in examples:
        positions = example.get("position_ids") or list(range(len(example["input_ids"])))
        out["input_ids"] += example["input_ids"]
        out["task_ids"] += example["task_ids"]
        out["position_ids"] += positions
        out["labels"] += [IGNORE_INDEX if p == 0 else label for p, label in zip(positions, example["labels"])]
    return out


def pack_indices(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Group examples (given by their lengths, in order) into packs of at most ``max_length`` tokens; an example is
    never split. Returns each pack's example indices.

    Each example goes to the open pack with the least room that still fits it (best fit), so the packs are dense
    without sorting the data. Concatenated by :func:`concatenate_examples`, every packed example keeps its
    ``task_ids`` and gets ``position_ids`` restarting at 0, which is what keeps attention inside the example.
    """
    members: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (room left, pack index)
    for example, length in enumerate(lengths):
        if length > max_length:
            raise ValueError(f"an example of {length} tokens does not fit max_length={max_length}; truncate first")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            room, index = free.pop(slot)
        else:
            room, index = max_length, len(members)
            members.append([])
        members[index].append(example)
        if room - length > 0:
            bisect.insort(free, (room - length, index))
    return members


def pack_examples(examples: Sequence[TokenizedExample], max_length: int) -> list[PackedExample]:
    """``examples`` packed into sequences of at most ``max_length`` tokens (:func:`pack_indices`), concatenated."""
    packs = pack_indices([len(example["input_ids"]) for example in examples], max_length)
    return [concatenate_examples([examples[index] for index in pack]) for pack in packs]

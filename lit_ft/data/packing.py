"""Pack examples into fixed-length sequences (best fit, O(n log n))."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Example = dict[str, list[int]]
PACKED_KEYS = ("input_ids", "labels", "task_ids")


def pack_examples(examples: Sequence[Example], max_length: int) -> list[Example]:
    """Concatenate examples into sequences of at most ``max_length`` tokens; an example is never split.

    Each example goes to the open sequence with the least room that still fits it (best fit), so the
    packs are dense without sorting the data. Every packed example keeps its ``task_ids`` and gets
    ``position_ids`` restarting at 0, which is what keeps attention inside the example.
    """
    packs: list[Example] = []
    free: list[tuple[int, int]] = []  # sorted (room left, pack index)
    for example in examples:
        length = len(example["input_ids"])
        if length > max_length:
            raise ValueError(f"an example of {length} tokens does not fit max_length={max_length}; truncate first")
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            room, index = free.pop(slot)
        else:
            room, index = max_length, len(packs)
            packs.append({key: [] for key in (*PACKED_KEYS, "position_ids")})
        pack = packs[index]
        for key in PACKED_KEYS:
            pack[key] += example[key]
        pack["position_ids"] += list(range(length))
        if room - length > 0:
            bisect.insort(free, (room - length, index))
    return packs

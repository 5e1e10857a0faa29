"""Batch tokenised examples: right-padded, packed several to a sequence, padding-free, or preference pairs.

The batches follow the batch contract written in :mod:`lit_ft.data.batch` (keys, shapes, padding values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lit_ft.data.batch import (
    IGNORE_INDEX,
    PackedBatch,
    PackedExample,
    PaddedBatch,
    PaddingFreeBatch,
    PaddingFreePreferenceBatch,
    PreferenceBatch,
    SharedPromptBatch,
    TokenizedExample,
    TokenizedPair,
    varlen_arguments,
)
from lit_ft.data.packing import concatenate_examples
from lit_ft.data.preference_rows import SIDES
from lit_ft.data.shared_prompt import shared_prompt_sequence


@dataclass
class Collator:
    """Pad a list of examples to one tensor batch (to a multiple of ``pad_to_multiple_of`` when set).

    Packed examples (:mod:`lit_ft.data.packing`, which carry ``position_ids``) give packed batches; the padding
    after each pack continues as its own position run so it forms a separate, loss-free segment.

    With ``padding_free`` the examples are concatenated into one row ([1, sum of lengths]) instead: no token
    is padding, and each example keeps its own positions (see :func:`concatenate_examples`); the batch also
    carries flash attention's varlen arguments (:func:`~lit_ft.data.batch.varlen_arguments`).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False

    def __call__(
        self, examples: Sequence[TokenizedExample | PackedExample]
    ) -> PaddedBatch | PackedBatch | PaddingFreeBatch:
        if self.padding_free:
            examples = [concatenate_examples(examples)]
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in examples[0]

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([e[key] + [value] * (length - len(e[key])) for e in examples], dtype=torch.long)

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "labels": pad("labels", IGNORE_INDEX),
            "task_ids": pad("task_ids", -1),
        }
        if packed:
            batch["position_ids"] = torch.tensor(
                [e["position_ids"] + list(range(length - len(e["position_ids"]))) for e in examples], dtype=torch.long
            )
            if self.padding_free:
                batch.update(varlen_arguments(batch["position_ids"][0].tolist()))
        else:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (length - len(e["input_ids"])) for e in examples], dtype=torch.long
            )
        return batch


@dataclass
class PairCollator:
    """Batch B pairs as 2B padded sequences, chosen first: rows ``[0, B)`` are chosen, ``[B, 2B)`` rejected.

    Besides the padded-batch contract (``input_ids``, ``labels``, ``attention_mask``, ``task_ids`` [2B, T]) the
    batch carries ``margin`` [B] (0 where a row gives none) and ``example_index`` [B] (the pair's position in
    its split, the key of cached reference log-probs).

    With ``padding_free`` the 2B sequences, in the same order, go back to back in one row instead
    (a :class:`~lit_ft.data.batch.PaddingFreePreferenceBatch`, built by :class:`Collator`). With ``shared_prompt``
    (whatever ``padding_free`` says) each pair is one sequence ``prompt + chosen + rejected``
    (:mod:`lit_ft.data.shared_prompt`), the B pairs back to back in one row (a
    :class:`~lit_ft.data.batch.SharedPromptBatch`).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    shared_prompt: bool = False

    def __call__(
        self, pairs: Sequence[TokenizedPair]
    ) -> PreferenceBatch | PaddingFreePreferenceBatch | SharedPromptBatch:
        batch = self.shared_prompt_batch(pairs) if self.shared_prompt else self.sequences_batch(pairs)
        batch["margin"] = torch.tensor([pair["margin"] or 0.0 for pair in pairs], dtype=torch.float32)
        batch["example_index"] = torch.tensor([pair["example_index"] for pair in pairs], dtype=torch.long)
        return batch

    def sequences_batch(self, pairs: Sequence[TokenizedPair]) -> PaddedBatch | PaddingFreeBatch:
        """The 2B sequences, chosen first, padded (or padding-free)."""
        sequences = [
            {**pair[side], "task_ids": [pair["task_id"]] * len(pair[side]["input_ids"])}
            for side in SIDES
            for pair in pairs
        ]
        return Collator(self.pad_token_id, self.pad_to_multiple_of, self.padding_free)(sequences)

    def shared_prompt_batch(self, pairs: Sequence[TokenizedPair]) -> PackedBatch:
        """The pairs' shared-prompt sequences back to back in one row [1, T], with ``sequence_ids`` [1, T] (chosen
        answer of pair i: i, rejected: B + i, padding: 2B) and ``sequence_ends`` [2B] (each side's last token)."""
        count, ids, ends, offset = len(pairs), [], [[], []], 0
        sequences = [shared_prompt_sequence(pair) for pair in pairs]
        for i, (sequence, branch) in enumerate(sequences):
            length = len(sequence["input_ids"])
            ids += [i] * branch + [count + i] * (length - branch)
            ends[0].append(offset + branch - 1)
            ends[1].append(offset + length - 1)
            offset += length
        batch = Collator(self.pad_token_id, self.pad_to_multiple_of)([concatenate_examples([s for s, _ in sequences])])
        padding = batch["input_ids"].shape[1] - offset
        batch["sequence_ids"] = torch.tensor([ids + [2 * count] * padding], dtype=torch.long)
        batch["sequence_ends"] = torch.tensor(ends[0] + ends[1], dtype=torch.long)
        return batch

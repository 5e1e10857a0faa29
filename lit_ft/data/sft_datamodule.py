"""LightningDataModule for supervised fine-tuning and continual pre-training data.

A row is one chat, prompt/completion or text example (:func:`~lit_ft.data.rows.parse_sft_row`); training
examples can be packed, and training batches served padding-free. The rest is
:class:`~lit_ft.data.datamodule.FineTuneDataModule`'s.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from lit_ft.data.batch import Example, TokenizedExample
from lit_ft.data.collate import Collator
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.packing import pack_examples
from lit_ft.data.readers import Record
from lit_ft.data.rows import parse_sft_row
from lit_ft.data.stats import SplitStats

log = logging.getLogger(__name__)


class SFTDataModule(FineTuneDataModule):
    """Chat (``messages``), ``prompt``/``completion`` and raw ``text`` rows, each with an optional ``task_type``.

    Args:
        packing: pack training examples into ``max_length`` sequences (validation stays padded, so its
            per-example losses are comparable across runs).
        pad_to_multiple_of: round padded lengths up (helps tensor cores on GPU).
        padding_free: serve each training batch as one row of its examples back to back (``position_ids``, no
            ``attention_mask``): the same examples and losses as padded batches, without computing on padding
            (with ``attn_implementation=sdpa_varlen`` or flash attention, attention stays per example too).
            Validation batches stay padded, so per-example outputs keep their [B, T] shape.
        (others: see :class:`FineTuneDataModule`)
    """

    def __init__(
        self,
        *args: Any,
        packing: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.packing, self.pad_to_multiple_of, self.padding_free = packing, pad_to_multiple_of, padding_free

    def encode(self, record: Record, stats: SplitStats) -> TokenizedExample | None:
        example = parse_sft_row(record, forbidden=self.tokenizer.all_special_tokens)
        truncated = self.tokenize([example], record.where, example.task_type, stats)
        return {**truncated.sequences[0], "task_type": example.task_type} if truncated.kept else None

    def finalize_train(self, examples: list[Example]) -> list[Example]:
        if not self.packing:
            return examples
        order = examples[:]
        random.Random(self.seed).shuffle(order)
        packs = pack_examples(order, self.max_length)
        log.info(
            "Packed %d training examples into %d sequences of <= %d tokens", len(examples), len(packs), self.max_length
        )
        return packs

    def collate_fn(self) -> Callable:
        return Collator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def train_collate_fn(self) -> Callable:
        return Collator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.padding_free)

"""LightningDataModule for supervised fine-tuning and continual pre-training data.

A row is one chat, prompt/completion or text example in any SFT format (:func:`~lit_ft.data.formats.parse_sft_row`);
raw text longer than ``max_length`` can be cut into blocks instead of truncated (:mod:`lit_ft.data.blocks`); training
examples can be packed, and training batches served padding-free. The rest is :class:`~lit_ft.data.datamodule.FineTuneDataModule`'s.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, get_args

from lit_ft.data.batch import TokenizedExample
from lit_ft.data.blocks import LongDocuments, check_stride, is_document, make_blocks
from lit_ft.data.collate import Collator
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.example_views import ExampleView, PackedExamples
from lit_ft.data.formats import detect_format, parse_sft_row
from lit_ft.data.packing import pack_indices
from lit_ft.data.readers import Record
from lit_ft.data.stats import SplitStats

log = logging.getLogger(__name__)


class SFTDataModule(FineTuneDataModule):
    """Rows of the SFT formats of :mod:`lit_ft.data.formats` (chat, ShareGPT, Alpaca, prompt/completion, text),
    each with an optional ``task_type``.

    Args:
        packing: pack training examples into ``max_length`` sequences (validation stays padded, so its
            per-example losses are comparable across runs).
        pad_to_multiple_of: round padded lengths up (helps tensor cores on GPU).
        padding_free: serve each training batch as one row of its examples back to back (``position_ids``, no
            ``attention_mask``): the same examples and losses as padded batches, without computing on padding
            (with ``attn_implementation=sdpa_varlen`` or flash attention, attention stays per example too).
            Validation batches stay padded, so per-example outputs keep their [B, T] shape.
        long_documents: what becomes of a raw-text row (``text``) longer than ``max_length``: ``truncate`` fits it
            by ``truncation`` like any row; ``blocks`` concatenates such rows (EOS between them) and cuts them into
            ``max_length`` blocks (:func:`~lit_ft.data.blocks.make_blocks`), for continual pre-training on long
            documents. Rows that fit, and chat or prompt/completion rows, are the same examples either way.
        block_stride: tokens each block repeats from the previous one as context without loss (``blocks`` only;
            0 to ``max_length - 1``).
        (others: see :class:`FineTuneDataModule`)
    """

    def __init__(
        self,
        *args: Any,
        packing: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
        long_documents: LongDocuments = "truncate",
        block_stride: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if long_documents not in get_args(LongDocuments):
            raise ValueError(f"long_documents={long_documents!r}: expected one of {get_args(LongDocuments)}")
        check_stride(block_stride, self.max_length)
        self.packing, self.pad_to_multiple_of, self.padding_free = packing, pad_to_multiple_of, padding_free
        self.long_documents, self.block_stride = long_documents, block_stride

    def encoding_settings(self) -> dict[str, Any]:
        return {"long_documents": self.long_documents, "block_stride": self.block_stride}

    def encode_source(self, records: Iterable[Record], stats: SplitStats) -> Iterator[TokenizedExample]:
        """A source's rows to examples in order, each fitted to ``max_length`` by the truncation rule; under
        ``long_documents=blocks`` its raw-text rows longer than ``max_length`` are cut into blocks instead, which
        follow the source's other examples (counted by :meth:`SplitStats.count_blocks`)."""
        documents: list[TokenizedExample] = []
        formats: Counter[str] = Counter()
        for record in records:
            formats[detect_format(record)] += 1
            example = parse_sft_row(record, forbidden=self.tokenizer.all_special_tokens)
            [tokens] = self.tokenize([example], record.where)
            if self.long_documents == "blocks" and is_document(example) and len(tokens["input_ids"]) > self.max_length:
                documents.append({**tokens, "task_type": example.task_type})
                continue
            truncated = self.fit([tokens], example.task_type, stats)
            if truncated.kept:
                yield {**truncated.sequences[0], "task_type": example.task_type}
        log.info("Row formats: %s", ", ".join(f"{name} {count}" for name, count in formats.items()))
        if documents:
            blocks = make_blocks(documents, self.max_length, self.block_stride)
            stats.count_blocks(len(documents), blocks)
            yield from blocks

    def finalize_train(self, examples: ExampleView) -> ExampleView | PackedExamples:
        if not self.packing:
            return examples
        order = list(range(len(examples)))
        random.Random(self.seed).shuffle(order)
        lengths = examples.lengths()
        packs = pack_indices([int(lengths[index]) for index in order], self.max_length)
        log.info(
            "Packed %d training examples into %d sequences of <= %d tokens", len(examples), len(packs), self.max_length
        )
        return PackedExamples(examples, [[order[member] for member in pack] for pack in packs])

    def collate_fn(self) -> Callable:
        return Collator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def train_collate_fn(self) -> Callable:
        return Collator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.padding_free)

"""LightningDataModule for supervised fine-tuning and continual pre-training data.

Reads files, validates rows, tokenises with the model's chat template, truncates or drops as configured
(counting both), optionally packs, and serves padded or packed batches following the batch contract.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from rich.progress import track
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_ft.data.collate import Collator
from lit_ft.data.packing import pack_examples
from lit_ft.data.readers import Record, read_records
from lit_ft.data.rows import parse_sft_row
from lit_ft.data.stats import SplitStats
from lit_ft.data.tokenize import IGNORE_INDEX, tokenize_example
from lit_ft.models import load_tokenizer

log = logging.getLogger(__name__)

TruncationPolicy = Literal["right", "left", "drop"]
Paths = str | Path | Sequence[str | Path] | None


def _as_list(paths: Paths) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]


class FineTuneDataModule(L.LightningDataModule):
    """Shared machinery of lit-ft DataModules: files -> validated rows -> tokenised examples -> loaders.

    Subclasses define :meth:`encode` (one raw record to a tokenised example dict with ``task_type``, or
    ``None`` when dropped, counting why in the stats) and :meth:`collate_fn`.

    Args:
        tokenizer: a tokenizer, or a model name/path to load one from.
        train_files / val_files: data files (JSONL, JSON, Parquet, ``datasets`` folders).
        val_ratio: when no ``val_files``, the fraction of training rows held out (seeded by ``seed``).
        max_length: tokens per example (and per pack); longer examples follow ``truncation``.
        truncation: ``right`` keeps the start, ``left`` keeps the end, ``drop`` removes the example.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase,
        train_files: Paths,
        val_files: Paths = None,
        val_ratio: float = 0.0,
        max_length: int = 1024,
        truncation: TruncationPolicy = "right",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self.train_files, self.val_files = _as_list(train_files), _as_list(val_files)
        if not self.train_files:
            raise ValueError("train_files is empty")
        self.val_ratio, self.max_length, self.truncation = val_ratio, max_length, truncation
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.task_names: list[str] = []
        self.stats: dict[str, SplitStats] = {}
        self.train_examples: list[dict[str, Any]] = []
        self.val_examples: list[dict[str, Any]] = []

    # --- subclass points -------------------------------------------------------------------------------
    def encode(self, record: Record, stats: SplitStats) -> dict[str, Any] | None:
        raise NotImplementedError

    def collate_fn(self) -> Callable:
        raise NotImplementedError

    def finalize_train(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Last step before the training loader (packing, for example)."""
        return examples

    # --- shared machinery --------------------------------------------------------------------------------
    def _split_records(self) -> tuple[list[Record], list[Record]]:
        train = [r for path in self.train_files for r in read_records(path)]
        if self.val_files:
            return train, [r for path in self.val_files for r in read_records(path)]
        if not self.val_ratio:
            return train, []
        shuffled = train[:]
        random.Random(self.seed).shuffle(shuffled)
        held_out = max(1, round(len(shuffled) * self.val_ratio))
        return shuffled[held_out:], shuffled[:held_out]

    def _encode_split(self, name: str, records: list[Record]) -> list[dict[str, Any]]:
        stats = SplitStats(rows=len(records))
        examples = []
        for record in track(records, description=f"Tokenising {name}", transient=True, disable=len(records) < 500):
            example = self.encode(record, stats)
            if example is not None:
                stats.examples += 1
                stats.examples_per_task[example["task_type"]] += 1
                examples.append(example)
        self.stats[name] = stats
        log.info(stats.describe(name))
        return examples

    def keep(self, num_truncated: int, loss_tokens: int, stats: SplitStats) -> bool:
        """Count what truncation did to an example; ``False`` when it must be dropped (and say why)."""
        if num_truncated and self.truncation == "drop":
            stats.dropped_too_long += 1
            return False
        if not loss_tokens:
            stats.dropped_no_loss_tokens += 1
            return False
        if num_truncated:
            stats.truncated_examples += 1
            stats.truncated_tokens += num_truncated
        return True

    def setup(self, stage: str | None = None) -> None:
        if self.task_names:  # idempotent: Lightning calls setup once per stage
            return
        train_records, val_records = self._split_records()
        self.train_examples = self._encode_split("train", train_records)
        self.val_examples = self._encode_split("val", val_records)
        if not self.train_examples:
            raise ValueError(
                f"No training examples left from {self.train_files}: {self.stats['train'].describe('train')}"
            )
        self.task_names = sorted({e["task_type"] for e in self.train_examples + self.val_examples})
        task_index = {name: i for i, name in enumerate(self.task_names)}
        for example in self.train_examples + self.val_examples:
            example["task_ids"] = [task_index[example["task_type"]]] * len(example["input_ids"])
        missing = set(self.stats["train"].examples_per_task) - set(self.stats["val"].examples_per_task)
        if self.val_examples and missing:
            log.warning("Task types with no validation examples: %s", ", ".join(sorted(missing)))
        self.train_examples = self.finalize_train(self.train_examples)

    def _loader(self, examples: list[dict[str, Any]], batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            examples,
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=self.collate_fn(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_examples, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_examples, self.eval_batch_size, shuffle=False) if self.val_examples else []


class SFTDataModule(FineTuneDataModule):
    """Chat (``messages``), ``prompt``/``completion`` and raw ``text`` rows, each with an optional ``task_type``.

    Args:
        packing: pack training examples into ``max_length`` sequences (validation stays padded, so its
            per-example losses are comparable across runs).
        pad_to_multiple_of: round padded lengths up (helps tensor cores on GPU).
        (others: see :class:`FineTuneDataModule`)
    """

    def __init__(self, *args: Any, packing: bool = False, pad_to_multiple_of: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packing, self.pad_to_multiple_of = packing, pad_to_multiple_of

    def encode(self, record: Record, stats: SplitStats) -> dict[str, Any] | None:
        example = parse_sft_row(record)
        side = "right" if self.truncation == "drop" else self.truncation
        tokens = tokenize_example(self.tokenizer, example, self.max_length, side)
        loss_tokens = sum(label != IGNORE_INDEX for label in tokens["labels"])
        if not self.keep(tokens.pop("num_truncated"), loss_tokens, stats):
            return None
        stats.tokens += len(tokens["input_ids"])
        stats.loss_tokens += loss_tokens
        return {**tokens, "task_type": example.task_type}

    def finalize_train(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
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

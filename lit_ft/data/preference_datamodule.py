"""LightningDataModule for preference pairs (reward models, DPO and its variants).

Both answers of a pair are tokenised exactly as SFT tokenises a conversation (chat template, loss labels on
the answer's assistant turns only: the completion mask is ``labels != -100``), and a batch of B pairs
holds the B chosen sequences followed by the B rejected ones, so one forward pass scores both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from lit_ft.data.collate import Collator
from lit_ft.data.preference_rows import SIDES, parse_preference_row
from lit_ft.data.readers import Record
from lit_ft.data.sft_datamodule import FineTuneDataModule
from lit_ft.data.stats import SplitStats
from lit_ft.data.tokenize import IGNORE_INDEX

Pair = dict[str, Any]


@dataclass
class PairCollator:
    """Batch B pairs as 2B padded sequences, chosen first: rows ``[0, B)`` are chosen, ``[B, 2B)`` rejected.

    Besides the padded-batch contract (``input_ids``, ``labels``, ``attention_mask``, ``task_ids`` [2B, T]) the
    batch carries ``margin`` [B] (0 where a row gives none) and ``example_index`` [B] (the pair's position in
    its split, the key of cached reference log-probs).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
        sequences = [
            {**pair[side], "task_ids": [pair["task_id"]] * len(pair[side]["input_ids"])}
            for side in SIDES
            for pair in pairs
        ]
        batch = Collator(self.pad_token_id, self.pad_to_multiple_of)(sequences)
        batch["margin"] = torch.tensor([pair["margin"] or 0.0 for pair in pairs], dtype=torch.float32)
        batch["example_index"] = torch.tensor([pair["index"] for pair in pairs], dtype=torch.long)
        return batch


class PreferenceDataModule(FineTuneDataModule):
    """Preference rows (``prompt``/``chosen``/``rejected``, or implicit-prompt conversations; see
    :mod:`lit_ft.data.preference_rows`), each with an optional ``task_type`` and ``margin``.

    Truncation applies to each answer's sequence (prompt + answer) on its own: ``left`` cuts the start of the
    prompt and keeps the answers whole (the usual choice for pairs), ``right`` cuts the end, ``drop`` removes
    the pair. A pair counts once in the stats: ``truncated_examples`` when either side was cut
    (``truncated_tokens`` sums both), dropped when either side is too long (``drop``) or lost all its answer
    tokens. ``tokens`` and ``loss_tokens`` count both sides.

    Args:
        pad_to_multiple_of: round padded lengths up (helps tensor cores on GPU).
        (others: see :class:`FineTuneDataModule`)
    """

    def __init__(self, *args: Any, pad_to_multiple_of: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pad_to_multiple_of = pad_to_multiple_of

    def encode(self, record: Record, stats: SplitStats) -> Pair | None:
        pair = parse_preference_row(record, forbidden=self.tokenizer.all_special_tokens)
        encoded, cut, loss_tokens = {}, 0, []
        for side in SIDES:
            tokens = self.tokenize(getattr(pair, side), record.where)
            cut += tokens.pop("num_truncated")
            loss_tokens.append(sum(label != IGNORE_INDEX for label in tokens["labels"]))
            encoded[side] = tokens
        if not self.keep(cut, min(loss_tokens), stats):
            return None
        stats.tokens += sum(len(encoded[side]["input_ids"]) for side in SIDES)
        stats.loss_tokens += sum(loss_tokens)
        return {**encoded, "task_type": pair.task_type, "margin": pair.margin}

    def set_task_id(self, example: Pair, task_id: int) -> None:
        example["task_id"] = task_id

    def loss_tokens(self, example: Pair) -> int:
        return sum(label != IGNORE_INDEX for side in SIDES for label in example[side]["labels"])

    def example_length(self, example: Pair) -> int:
        """The longer side: a batch of pairs is padded to its longest chosen or rejected sequence."""
        return max(len(example[side]["input_ids"]) for side in SIDES)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        for examples in (self.train_examples, self.val_examples):
            for index, example in enumerate(examples):
                example["index"] = index

    def collate_fn(self) -> Callable:
        return PairCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def ordered_dataloader(self, split: str) -> DataLoader:
        """All pairs of ``split`` (``train`` or ``val``) in file order, unshuffled (for a pass of reference log-probs)."""
        examples = {"train": self.train_examples, "val": self.val_examples}[split]
        return self._loader(examples, self.eval_batch_size)

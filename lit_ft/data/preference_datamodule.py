"""LightningDataModule for preference pairs (reward models, DPO and its variants).

Both answers of a pair are tokenised exactly as SFT tokenises a conversation (chat template, loss labels on
the answer's assistant turns only: the completion mask is ``labels != -100``), and batched by
:class:`~lit_ft.data.collate.PairCollator` (a :class:`~lit_ft.data.batch.PreferenceBatch`: the B chosen
sequences followed by the B rejected ones, so one forward pass scores both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from lit_ft.data.batch import TokenizedPair
from lit_ft.data.collate import PairCollator
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.example_store import PAIR_SCHEMA
from lit_ft.data.preference_rows import parse_preference_row
from lit_ft.data.readers import Record
from lit_ft.data.stats import SplitStats


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
        padding_free: serve each training batch's 2B sequences back to back in one row
            (:class:`~lit_ft.data.batch.PaddingFreePreferenceBatch`): the same pairs, log-probs and rewards as
            padded batches without computing on padding (attention per sequence needs ``sdpa_varlen`` or flash
            attention). Validation batches, and the pass of precomputed reference log-probs, stay padded.
        shared_prompt: serve each training pair as one sequence ``prompt + chosen + rejected``, the pairs back to back
            in one row (:class:`~lit_ft.data.batch.SharedPromptBatch`; padding-free whatever ``padding_free``
            says): the prompt runs once, with the same log-probs and rewards (needs ``sdpa_varlen``). Validation
            batches and the precomputed reference pass stay padded.
        (others: see :class:`FineTuneDataModule`)
    """

    EXAMPLE_SCHEMA = PAIR_SCHEMA

    def __init__(
        self,
        *args: Any,
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
        shared_prompt: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pad_to_multiple_of, self.padding_free, self.shared_prompt = pad_to_multiple_of, padding_free, shared_prompt

    def encode(self, record: Record, stats: SplitStats) -> TokenizedPair | None:
        pair = parse_preference_row(record, forbidden=self.tokenizer.all_special_tokens)
        truncated = self.fit(self.tokenize([pair.chosen, pair.rejected], record.where), pair.task_type, stats)
        if not truncated.kept:
            return None
        chosen, rejected = truncated.sequences
        return {"chosen": chosen, "rejected": rejected, "task_type": pair.task_type, "margin": pair.margin}

    @staticmethod
    def label_example(example: TokenizedPair, index: int, task_ids: dict[str, int]) -> None:
        """A pair's task id, and its position in its split (``example_index``: where its precomputed reference
        log-probs are kept)."""
        example["task_id"] = task_ids[example["task_type"]]
        example["example_index"] = index

    def collate_fn(self) -> Callable:
        return PairCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def train_collate_fn(self) -> Callable:
        return PairCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.padding_free, self.shared_prompt)

    def ordered_dataloader(self, split: str) -> DataLoader:
        """All pairs of ``split`` (``train`` or ``val``) in file order, unshuffled (for a pass of reference log-probs)."""
        examples = {"train": self.train_examples, "val": self.val_examples}[split]
        return self._loader(examples, self.eval_batch_size)

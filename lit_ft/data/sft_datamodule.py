"""LightningDataModule for supervised fine-tuning and continual pre-training data.

Reads files, validates rows, tokenises with the model's chat template, truncates or drops as configured
(counting both), optionally packs, and serves padded or packed batches following the batch contract.
"""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from lit_ft.data.collate import Collator
from lit_ft.data.mixing import DataSource, sample_mixture
from lit_ft.data.packing import pack_examples
from lit_ft.data.readers import TRAIN_SPLITS, VAL_SPLITS, DataError, Record, read_records
from lit_ft.data.rows import SFTExample, parse_sft_row
from lit_ft.data.sampler import LengthGroupedSampler, ResumableSampler
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
        trust_remote_code: run tokenizer code shipped with the model (as ``model.trust_remote_code``); off by default.
        mixture: instead of ``train_files``, several :class:`DataSource` (or dicts of its fields): files,
            sampling ``weight``, optional ``task_type`` and ``val_files``. ``val_files`` then adds validation
            data for the whole mixture.
        train_samples: training examples per epoch, drawn from the sources in proportion to their weights
            (default: as many as the sources hold together). Weights count examples, before packing.
        max_val_rows: validate on a seeded random sample of this many validation rows (cheaper validation);
            the rows left out are counted as ``unused_rows`` in the stats.
        group_by_length: batch training examples of similar length (:class:`LengthGroupedSampler`, seeded by
            ``seed``): less padding, the same examples per epoch; batches are less random.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase,
        train_files: Paths = None,
        val_files: Paths = None,
        val_ratio: float = 0.0,
        max_length: int = 1024,
        truncation: TruncationPolicy = "right",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        trust_remote_code: bool = False,
        mixture: Sequence[DataSource | dict[str, Any]] | None = None,
        train_samples: int | None = None,
        max_val_rows: int | None = None,
        group_by_length: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer
        self.train_files, self.val_files = _as_list(train_files), _as_list(val_files)
        self.mixture = [DataSource.of(source) for source in mixture or []]
        if self.mixture and self.train_files:
            raise ValueError("give either train_files or a mixture of sources, not both (set train_files=null)")
        if not self.train_files and not self.mixture:
            raise ValueError("train_files is empty")
        self.train_samples = train_samples
        self.val_ratio, self.max_length, self.truncation = val_ratio, max_length, truncation
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.group_by_length = num_workers, seed, group_by_length
        self.max_val_rows = max_val_rows
        self.task_names: list[str] = []
        self.stats: dict[str, SplitStats] = {}
        self.train_examples: list[dict[str, Any]] = []
        self.val_examples: list[dict[str, Any]] = []
        self.train_sampler: ResumableSampler | None = None
        self._resume_at: tuple[int, int] | None = None  # (epoch, samples to skip) for the next training loader

    # --- subclass points -------------------------------------------------------------------------------
    def encode(self, record: Record, stats: SplitStats) -> dict[str, Any] | None:
        raise NotImplementedError

    def collate_fn(self) -> Callable:
        raise NotImplementedError

    def train_collate_fn(self) -> Callable:
        """The training batches' collator (the same as validation's unless a subclass says otherwise)."""
        return self.collate_fn()

    def finalize_train(self, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Last step before the training loader (packing, for example)."""
        return examples

    def loss_tokens(self, example: dict[str, Any]) -> int:
        """Loss-carrying tokens of an encoded example (counted in the mixture statistics)."""
        return sum(label != IGNORE_INDEX for label in example["labels"])

    def example_length(self, example: dict[str, Any]) -> int:
        """Tokens of an encoded example (what ``group_by_length`` sorts by)."""
        return len(example["input_ids"])

    def set_task_id(self, example: dict[str, Any], task_id: int) -> None:
        """Record the example's task id (by default ``task_ids``, one per token, as the batch contract wants)."""
        example["task_ids"] = [task_id] * len(example["input_ids"])

    # --- shared machinery --------------------------------------------------------------------------------
    @staticmethod
    def _read(paths: list[str], splits: tuple[str, ...] = TRAIN_SPLITS) -> list[Record]:
        """The rows of ``paths``; of a ``DatasetDict`` folder, the first of ``splits`` it has."""
        records = []
        for path in paths:
            rows = list(read_records(path, splits))
            if not rows:
                raise DataError(str(path), "the file holds no rows (it is empty or has only blank lines)")
            records += rows
        return records

    def sources(self) -> list[DataSource]:
        """The training sources: the mixture, or ``train_files`` (with ``val_files``) as a single source."""
        return self.mixture or [DataSource(files=self.train_files, val_files=self.val_files)]

    def _split_records(self, source: DataSource) -> tuple[list[Record], list[Record]]:
        """A source's training and validation rows (its ``val_files``, else a ``val_ratio`` hold-out), relabelled
        with the source's ``task_type`` when it has one."""
        train = self._read(_as_list(source.files))
        if source.val_files:
            val = self._read(_as_list(source.val_files), VAL_SPLITS)
        elif self.val_ratio:
            shuffled = train[:]
            random.Random(self.seed).shuffle(shuffled)
            held_out = max(1, round(len(shuffled) * self.val_ratio))
            train, val = shuffled[held_out:], shuffled[:held_out]
        else:
            val = []
        if source.task_type is None:
            return train, val
        return [[Record(r.where, {**r.row, "task_type": source.task_type}) for r in rs] for rs in (train, val)]

    def _splits(self) -> tuple[list[list[Record]], list[Record]]:
        """Training rows per source, and all validation rows (the sources', then a mixture's own ``val_files``)."""
        splits = [self._split_records(source) for source in self.sources()]
        extra_val = self._read(self.val_files, VAL_SPLITS) if self.mixture else []
        return [train for train, _ in splits], [r for _, val in splits for r in val] + extra_val

    def split_records(self) -> tuple[list[Record], list[Record]]:
        """The raw training rows (all sources) and validation rows, as read (before validation and tokenisation)."""
        train_groups, val = self._splits()
        return [record for group in train_groups for record in group], val

    def val_records(self) -> list[Record]:
        """The raw rows of the validation split, as read (before validation and tokenisation)."""
        return self._splits()[1]

    def _encode_split(self, name: str, groups: list[list[Record]]) -> list[list[dict[str, Any]]]:
        """Encode each group of records (one per source); one :class:`SplitStats` counts them all."""
        stats = SplitStats(rows=sum(len(records) for records in groups))
        encoded = []
        for records in groups:
            examples = []
            for record in track(records, description=f"Tokenising {name}", transient=True, disable=len(records) < 500):
                example = self.encode(record, stats)
                if example is not None:
                    stats.examples += 1
                    stats.examples_per_task[example["task_type"]] += 1
                    examples.append(example)
            encoded.append(examples)
        self.stats[name] = stats
        log.info(stats.describe(name))
        return encoded

    def _mix(self, sources: list[DataSource], groups: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Draw the epoch's training examples from the sources by weight, and record what was drawn."""
        total = self.train_samples or sum(len(group) for group in groups)
        tagged = [[(index, example) for example in group] for index, group in enumerate(groups)]
        drawn = sample_mixture(tagged, [s.weight for s in sources], total, self.seed)
        loss_tokens = [0] * len(sources)
        for index, example in drawn:
            loss_tokens[index] += self.loss_tokens(example)
        weights = sum(s.weight for s in sources)
        self.stats["train"].sources = {
            source.label: {
                "weight": source.weight / weights,
                "examples": len(group),
                "drawn": sum(index == i for index, _ in drawn),
                "loss_token_share": loss_tokens[i] / max(1, sum(loss_tokens)),
            }
            for i, (source, group) in enumerate(zip(sources, groups))
        }
        for name, row in self.stats["train"].sources.items():
            log.info(
                "Mixture %s: weight %.3f, %d of %d examples drawn per epoch (%.2f passes), %.1f%% of loss tokens",
                name,
                row["weight"],
                row["drawn"],
                row["examples"],
                row["drawn"] / max(1, row["examples"]),
                100 * row["loss_token_share"],
            )
        return [example for _, example in drawn]

    def tokenize(self, example: SFTExample, where: str) -> dict[str, Any]:
        """:func:`tokenize_example` with this module's length and truncation side (``drop`` cuts on the right,
        then :meth:`keep` drops); a chat template that cannot render the conversation is a :class:`DataError`
        naming the row."""
        side = "right" if self.truncation == "drop" else self.truncation
        try:
            return tokenize_example(self.tokenizer, example, self.max_length, side)
        except ValueError as error:
            raise DataError(where, str(error)) from error

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
        train_groups, val_records = self._splits()
        train_groups = self._encode_split("train", train_groups)
        unused_val = max(0, len(val_records) - self.max_val_rows) if self.max_val_rows is not None else 0
        if unused_val:
            keep = sorted(random.Random(self.seed).sample(range(len(val_records)), self.max_val_rows))
            val_records = [val_records[i] for i in keep]
        self.val_examples = self._encode_split("val", [val_records])[0]
        self.stats["val"].unused_rows = unused_val
        if self.mixture or self.train_samples:
            self.train_examples = self._mix(self.sources(), train_groups)
        else:
            self.train_examples = train_groups[0]
        if not self.train_examples:
            sources = ", ".join(str(source.files) for source in self.sources())
            raise ValueError(f"No training examples left from {sources}: {self.stats['train'].describe('train')}")
        self.task_names = sorted({e["task_type"] for e in self.train_examples + self.val_examples})
        task_index = {name: i for i, name in enumerate(self.task_names)}
        for example in self.train_examples + self.val_examples:
            self.set_task_id(example, task_index[example["task_type"]])
        missing = set(self.stats["train"].examples_per_task) - set(self.stats["val"].examples_per_task)
        if self.val_examples and missing:
            self.stats["val"].task_types_missing = sorted(missing)  # counted in summary.json, not only logged
            log.warning("Task types with no validation examples: %s", ", ".join(sorted(missing)))
        self.train_examples = self.finalize_train(self.train_examples)

    def _loader(
        self,
        examples: list[dict[str, Any]],
        batch_size: int,
        sampler: Sampler | None = None,
        collate_fn: Callable | None = None,
    ) -> DataLoader:
        return DataLoader(
            examples,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn or self.collate_fn(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # iterators draw their worker seed from this generator, not from the global RNG (which dropout uses)
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        ranks = {"num_replicas": trainer.world_size if trainer else 1, "rank": trainer.global_rank if trainer else 0}
        if self.group_by_length:
            lengths = [self.example_length(e) for e in self.train_examples]
            self.train_sampler = LengthGroupedSampler(
                self.train_examples, lengths, self.batch_size, seed=self.seed, **ranks
            )
        else:
            self.train_sampler = ResumableSampler(self.train_examples, seed=self.seed, **ranks)
        if self._resume_at is not None:
            self.train_sampler.resume(*self._resume_at)
            self._resume_at = None
        return self._loader(self.train_examples, self.batch_size, self.train_sampler, self.train_collate_fn())

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_examples:
            return []
        ranks, count = (self.trainer.world_size if self.trainer else 1), len(self.val_examples)
        if count % ranks:  # Lightning's DistributedSampler pads every rank's share to the same length
            log.warning(
                "validation: %d examples over %d ranks, so %d of them are repeated to give every rank as many, and "
                "count twice in the val/ metrics; a validation set divisible by %d gives exact numbers",
                count,
                ranks,
                ranks - count % ranks,
                ranks,
            )
        return self._loader(self.val_examples, self.eval_batch_size)

    # --- exact resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where training is in the data, saved in every checkpoint: training batches done and batches per epoch.

        Read from the trainer's batch counter (batches whose training step ran), not from the loader, which
        has already prefetched the next batch when a checkpoint is taken.
        """
        trainer = self.trainer
        per_epoch = trainer.num_training_batches if trainer is not None else 0
        if not per_epoch or per_epoch == float("inf"):
            return {}
        return {
            "batches_done": trainer.fit_loop.epoch_loop.batch_progress.total.processed,
            "batches_per_epoch": int(per_epoch),
            "layout": self._data_layout(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Start the next training loader at the saved position: the epoch's seeded order, minus the batches done."""
        if not state_dict:
            return
        if state_dict.get("layout") != self._data_layout():
            log.warning(
                "The training data, batch size or number of devices changed since the checkpoint (%s, now %s): "
                "the resumed data order is not the one the interrupted run would have seen.",
                state_dict.get("layout"),
                self._data_layout(),
            )
        epoch, batch = divmod(state_dict["batches_done"], state_dict["batches_per_epoch"])
        self._resume_at = (epoch, batch * self.batch_size)
        # Lightning warns that a loader without state_dict cannot resume mid-epoch; this one resumes through here.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        log.info("Resuming the training data at epoch %d, batch %d", epoch, batch)
        fit_loop = self.trainer.fit_loop if self.trainer is not None else None
        if self.train_sampler is not None and fit_loop is not None and fit_loop._data_fetcher is not None:
            # Strategies that restore after setup (FSDP, DeepSpeed, ModelParallel) built and started the loader
            # before this call: restart its iterator at the resumed position.
            self.train_sampler.resume(*self._resume_at)
            self._resume_at = None
            iter(fit_loop._data_fetcher)

    def _data_layout(self) -> dict[str, int]:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return {"examples": len(self.train_examples), "batch_size": self.batch_size, "world_size": world_size}


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

    def encode(self, record: Record, stats: SplitStats) -> dict[str, Any] | None:
        example = parse_sft_row(record, forbidden=self.tokenizer.all_special_tokens)
        tokens = self.tokenize(example, record.where)
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

    def train_collate_fn(self) -> Callable:
        return Collator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.padding_free)

"""The machinery shared by lit-ft's DataModules: files -> rows -> tokenised, truncated examples -> loaders.

Reads files (or a weighted mixture of sources), holds out validation rows, validates and tokenises each row,
truncates or drops as configured (:func:`~lit_ft.data.truncation.truncate`, counted in :class:`SplitStats`; long raw
text may be cut into blocks instead, :mod:`lit_ft.data.blocks`), and writes the examples to Arrow files, cached on
disk and memory-mapped (:mod:`lit_ft.data.cache`, :mod:`lit_ft.data.example_store`): a later run with the same
sources, tokenizer and data settings reads them instead of tokenising again. Then it draws the epoch's examples,
numbers the task types, and serves batches following the batch contract (:mod:`lit_ft.data.batch`), resumable
mid-epoch. :class:`~lit_ft.data.sft_datamodule.SFTDataModule` and
:class:`~lit_ft.data.preference_datamodule.PreferenceDataModule` say what a row is and how it is batched.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from rich.progress import track
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import Example, Tokens
from lit_ft.data.cache import build_once, cache_key, folder_size, tokenizer_fingerprint
from lit_ft.data.chat_templates import with_chat_template
from lit_ft.data.example_store import EXAMPLE_SCHEMA, ArrowExamples, write_examples
from lit_ft.data.example_views import ExampleView, PackedExamples
from lit_ft.data.mixing import DataSource, sample_mixture
from lit_ft.data.readers import TRAIN_SPLITS, VAL_SPLITS, DataError, Record
from lit_ft.data.repeated_batches import RepeatedBatches
from lit_ft.data.rows import SFTExample
from lit_ft.data.sampler import LengthGroupedSampler, ResumableSampler
from lit_ft.data.sources import RowSource, Sources, source_list
from lit_ft.data.stats import SplitStats
from lit_ft.data.tokenize import tokenize_example
from lit_ft.data.truncation import Truncated, TruncationPolicy, truncate
from lit_ft.models import load_tokenizer
from lit_ft.utils.lightning_compat import train_data_fetcher

log = logging.getLogger(__name__)


class SplitRecords(NamedTuple):
    """The rows of every source, split: training rows per source; all validation rows (the sources', then a
    mixture's own ``val_files``); per split, the rows ``task_types`` filters left out, counted per task type."""

    train_per_source: list[list[Record]]
    val: list[Record]
    filtered: dict[str, Counter]


class FineTuneDataModule(L.LightningDataModule):
    """Shared machinery of lit-ft DataModules: files -> validated rows -> tokenised examples -> loaders.

    Subclasses define :meth:`encode` (one raw record to a tokenised example with ``task_type``, or ``None`` when
    dropped; through :meth:`tokenize` and :meth:`fit`, which truncates and counts), or :meth:`encode_source` when an
    example may come from several records (CPT blocks), and :meth:`collate_fn`; an example of another shape than
    :class:`~lit_ft.data.batch.TokenizedExample` names its Arrow layout (:attr:`EXAMPLE_SCHEMA`) and how it carries
    its task id (:meth:`label_example`); settings of theirs that change the examples go in :meth:`encoding_settings`.

    The examples are built once per key (:meth:`prepare_data`, which Lightning runs on one process per node before
    the others set up) and memory-mapped by every process (:meth:`setup`): ``train_examples`` and ``val_examples``
    are sequences read from disk, not lists.

    Args:
        tokenizer: a tokenizer, or a model name/path to load one from.
        train_files / val_files: where the rows come from: local files (JSONL, JSON, Parquet), ``datasets``
            folders, or datasets by name, each a path or a mapping ``{path, name, split, data_files, revision,
            columns, task_types}`` (:mod:`lit_ft.data.sources`).
        val_ratio: when no ``val_files``, the fraction of training rows held out (seeded by ``seed``).
        max_length: tokens per example (and per pack); longer examples follow ``truncation``.
        truncation: ``right`` keeps the start, ``left`` keeps the end, ``drop`` removes the example.
        trust_remote_code: run tokenizer code shipped with the model (as ``model.trust_remote_code``); off by default.
        chat_template: render conversations with this template instead of the tokenizer's own: a built-in name
            (``chatml``, ``llama3``, ``zephyr``), a Jinja file or Jinja text
            (:func:`~lit_ft.data.chat_templates.with_chat_template`); ``tokenizer`` is then a copy carrying it, which
            the run exports with the model.
        mixture: instead of ``train_files``, several :class:`DataSource` (or dicts of its fields): sources,
            sampling ``weight``, optional ``task_type`` and ``val_files``. ``val_files`` then adds validation
            data for the whole mixture.
        train_samples: training examples per epoch, drawn from the sources in proportion to their weights
            (default: as many as the sources hold together). Weights count examples, before packing.
        max_val_rows: validate on a seeded random sample of this many validation rows (cheaper validation);
            the rows left out are counted as ``unused_rows`` in the stats.
        group_by_length: batch training examples of similar length (:class:`LengthGroupedSampler`, seeded by
            ``seed``): less padding, the same examples per epoch; batches are less random.
        cache_dir: the folder of cached tokenised examples (a sub-folder per key, :mod:`lit_ft.data.cache`);
            ``None`` builds them in a temporary folder, removed when the process ends.
    """

    EXAMPLE_SCHEMA: ClassVar[pa.Schema] = EXAMPLE_SCHEMA

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase,
        train_files: Sources = None,
        val_files: Sources = None,
        val_ratio: float = 0.0,
        max_length: int = 1024,
        truncation: TruncationPolicy = "right",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
        mixture: Sequence[DataSource | dict[str, Any]] | None = None,
        train_samples: int | None = None,
        max_val_rows: int | None = None,
        group_by_length: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer = with_chat_template(tokenizer, chat_template)
        self.train_files, self.val_files = source_list(train_files), source_list(val_files)
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
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.task_names: list[str] = []
        self.stats: dict[str, SplitStats] = {}
        self.train_examples: Sequence[Example] = []
        self.val_examples: Sequence[Example] = []
        self._examples_dir: Path | None = None
        self._temporary_dir: tempfile.TemporaryDirectory | None = None
        self.train_sampler: ResumableSampler | None = None
        # Each training batch served this many times in a row (:class:`RepeatedBatches`): set by a module that
        # optimises several passes over what it makes of one batch (online RL's rollouts), not by the config.
        self.batch_repeats = 1
        self._train_batches: RepeatedBatches | None = None
        # (epoch, samples to skip, repeats of the first batch already served) for the next training loader
        self._resume_at: tuple[int, int, int] | None = None

    # --- subclass points -------------------------------------------------------------------------------
    def encode(self, record: Record, stats: SplitStats) -> Example | None:
        """One raw record to an example (``None`` when dropped), counted in ``stats`` by :meth:`fit`."""
        raise NotImplementedError

    def encode_source(self, records: Iterable[Record], stats: SplitStats) -> Iterator[Example]:
        """A source's records to its examples, counted in ``stats`` as they are drawn: by default each record by
        :meth:`encode`, the dropped ones left out."""
        return (example for record in records if (example := self.encode(record, stats)) is not None)

    def collate_fn(self) -> Callable:
        raise NotImplementedError

    def train_collate_fn(self) -> Callable:
        """The training batches' collator (the same as validation's unless a subclass says otherwise)."""
        return self.collate_fn()

    def finalize_train(self, examples: ExampleView) -> ExampleView | PackedExamples:
        """Last step before the training loader (packing, for example)."""
        return examples

    def encoding_settings(self) -> dict[str, Any]:
        """The subclass's settings that change what an example is (part of the cache key)."""
        return {}

    @staticmethod
    def label_example(example: Example, index: int, task_ids: dict[str, int]) -> None:
        """Give an example read from its file what is known only once all are read: its task id (``task_ids``,
        one per token, as the batch contract wants). ``index`` is its position in its split."""
        example["task_ids"] = [task_ids[example["task_type"]]] * len(example["input_ids"])

    # --- shared machinery --------------------------------------------------------------------------------

    def tokenize(self, examples: Sequence[SFTExample], where: str) -> list[Tokens]:
        """Tokenise an example's sequences (one, or a pair's two), whole. A chat template that cannot render a
        conversation is a :class:`DataError` naming the row."""
        try:
            return [tokenize_example(self.tokenizer, example) for example in examples]
        except ValueError as error:
            raise DataError(where, str(error)) from error

    def fit(self, sequences: Sequence[Tokens], task_type: str, stats: SplitStats) -> Truncated:
        """Fit an example's sequences to ``max_length`` by :func:`truncate`, counting the outcome in ``stats``."""
        truncated = truncate(sequences, self.max_length, self.truncation)
        stats.count(truncated, task_type)
        return truncated

    @staticmethod
    def _read(sources: list[RowSource], splits: tuple[str, ...], filtered: Counter) -> list[Record]:
        """The rows of ``sources`` (of a ``DatasetDict``, the first of ``splits`` it has), ``columns`` applied;
        the rows a source's ``task_types`` left out are added to ``filtered`` (per task type)."""
        records = []
        for source in sources:
            kept, left_out = source.read(splits)
            records += kept
            filtered.update(left_out)
        return records

    def sources(self) -> list[DataSource]:
        """The training sources: the mixture, or ``train_files`` (with ``val_files``) as a single source."""
        return self.mixture or [DataSource(files=self.train_files, val_files=self.val_files)]

    def _source_train_val_records(
        self, source: DataSource, filtered: dict[str, Counter]
    ) -> tuple[list[Record], list[Record]]:
        """One source's training and validation rows (its ``val_files``, else a ``val_ratio`` hold-out of the
        training rows kept), relabelled with the source's ``task_type`` when it has one; the rows filtered out by
        ``task_types`` are counted in ``filtered["train"]`` and ``filtered["val"]``."""
        train = self._read(source_list(source.files), TRAIN_SPLITS, filtered["train"])
        if source.val_files:
            val = self._read(source_list(source.val_files), VAL_SPLITS, filtered["val"])
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

    def _read_splits(self) -> SplitRecords:
        """Every source's rows, split (:class:`SplitRecords`)."""
        filtered: dict[str, Counter] = {"train": Counter(), "val": Counter()}
        splits = [self._source_train_val_records(source, filtered) for source in self.sources()]
        extra_val = self._read(self.val_files, VAL_SPLITS, filtered["val"]) if self.mixture else []
        return SplitRecords([train for train, _ in splits], [r for _, val in splits for r in val] + extra_val, filtered)

    def train_and_val_records(self) -> tuple[list[Record], list[Record]]:
        """The raw training rows (all sources) and validation rows, as read (``columns`` applied, ``task_types``
        kept; before validation and tokenisation)."""
        train_groups, val, _ = self._read_splits()
        return [record for group in train_groups for record in group], val

    def val_records(self) -> list[Record]:
        """The raw rows of the validation split, as read (``columns`` applied, ``task_types`` kept; before
        validation and tokenisation): from the examples' folder once set up, else read from the sources."""
        if self._examples_dir is None:
            return self._read_splits().val
        with (self._examples_dir / "val_records.jsonl").open() as lines:
            return [Record(**json.loads(line)) for line in lines]

    def cache_settings(self) -> dict[str, Any]:
        """What the examples depend on besides the code (:func:`~lit_ft.data.cache.cache_key` adds that): the
        DataModule, the tokenizer, the data settings, and every source's contents."""

        def fingerprints(sources: Any) -> list[str]:
            return [source.fingerprint() for source in source_list(sources)]

        return {
            "datamodule": f"{type(self).__module__}.{type(self).__qualname__}",
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "val_ratio": self.val_ratio,
            "max_val_rows": self.max_val_rows,
            "split_seed": self.seed if self.val_ratio or self.max_val_rows is not None else None,
            **self.encoding_settings(),
            "sources": [
                {"files": fingerprints(s.files), "val_files": fingerprints(s.val_files), "task_type": s.task_type}
                for s in self.sources()
            ],
            # a mixture's own validation data (without a mixture, val_files is the single source's, above)
            "mixture_val_files": fingerprints(self.val_files) if self.mixture else [],
        }

    def prepare_data(self) -> None:
        """Build the examples' folder unless it is cached. Lightning runs this on one process per node before
        :meth:`setup` (the node's other processes wait, then map the folder)."""
        self._examples_folder()

    def _examples_folder(self) -> Path:
        """The folder of this DataModule's examples (built now when missing)."""
        if self._examples_dir is not None:
            return self._examples_dir
        if self.cache_dir is None:
            self._temporary_dir = tempfile.TemporaryDirectory(prefix="lit_ft-examples-")
            folder = Path(self._temporary_dir.name) / "examples"
        else:
            folder = self.cache_dir / cache_key(self.cache_settings())
        started = time.perf_counter()
        if build_once(folder, self._build):
            size = folder_size(folder) / 2**20
            log.info(
                "Tokenised examples written to %s (%.1f MiB) in %.1f s", folder, size, time.perf_counter() - started
            )
        else:
            log.info("Reusing the tokenised examples in %s (same sources, tokenizer and data settings)", folder)
        self._examples_dir = folder
        return folder

    def _build(self, folder: Path) -> None:
        """Read, validate, tokenise and fit every row, and write the examples (``train-<source>.arrow``,
        ``val.arrow``), their :class:`SplitStats` (``stats.json``) and the raw validation rows
        (``val_records.jsonl``, for prompts) to ``folder``."""
        train_groups, val_records, filtered = self._read_splits()
        stats = {"train": SplitStats(), "val": SplitStats()}
        for name, split_stats in stats.items():
            split_stats.count_filtered_rows(filtered[name])
        for index, records in enumerate(train_groups):
            progress = track(records, description="Tokenising train", transient=True, disable=len(records) < 500)
            examples = self.encode_source(progress, stats["train"])
            write_examples(folder / f"train-{index}.arrow", examples, self.EXAMPLE_SCHEMA)
        with (folder / "val_records.jsonl").open("w") as out:
            out.writelines(json.dumps({"where": r.where, "row": r.row}, default=str) + "\n" for r in val_records)
        unused_val = max(0, len(val_records) - self.max_val_rows) if self.max_val_rows is not None else 0
        if unused_val:
            keep = sorted(random.Random(self.seed).sample(range(len(val_records)), self.max_val_rows))
            val_records = [val_records[i] for i in keep]
        stats["val"].count_unused_rows(unused_val)
        progress = track(val_records, description="Tokenising val", transient=True, disable=len(val_records) < 500)
        write_examples(folder / "val.arrow", self.encode_source(progress, stats["val"]), self.EXAMPLE_SCHEMA)
        (folder / "stats.json").write_text(json.dumps({name: s.to_dict() for name, s in stats.items()}, indent=1))

    def _mix(self, sources: list[DataSource], stores: list[ArrowExamples]) -> ExampleView:
        """Draw the epoch's training examples from the sources by weight, and record what was drawn."""
        total = self.train_samples or sum(len(store) for store in stores)
        tagged = [[(index, row) for row in range(len(store))] for index, store in enumerate(stores)]
        drawn = sample_mixture(tagged, [s.weight for s in sources], total, self.seed)
        origins = np.array([index for index, _ in drawn], dtype=np.int64)
        view = ExampleView(stores, origins, np.array([row for _, row in drawn], dtype=np.int64))
        drawn_loss_tokens = np.bincount(origins, weights=view.loss_tokens(), minlength=len(sources))
        self.stats["train"].count_sources(
            [source.label for source in sources],
            [source.weight for source in sources],
            [len(store) for store in stores],
            np.bincount(origins, minlength=len(sources)).tolist(),
            [int(tokens) for tokens in drawn_loss_tokens],
        )
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
        return view

    def setup(self, stage: str | None = None) -> None:
        if self.task_names:  # idempotent: Lightning calls setup once per stage
            return
        folder = self._examples_folder()
        self.stats = {
            name: SplitStats.from_dict(stats) for name, stats in json.loads((folder / "stats.json").read_text()).items()
        }
        for name, stats in self.stats.items():
            log.info(stats.describe(name))
        stores = [ArrowExamples(folder / f"train-{index}.arrow") for index in range(len(self.sources()))]
        mixed = self.mixture or self.train_samples
        train = self._mix(self.sources(), stores) if mixed else ExampleView.of(stores[0])
        if not len(train):
            sources = ", ".join(
                str(row_source) for source in self.sources() for row_source in source_list(source.files)
            )
            raise ValueError(f"No training examples left from {sources}: {self.stats['train'].describe('train')}")
        val = ExampleView.of(ArrowExamples(folder / "val.arrow"))
        self.task_names = sorted(train.task_types() | val.task_types())
        label = functools.partial(
            type(self).label_example, task_ids={name: i for i, name in enumerate(self.task_names)}
        )
        self.val_examples = val.labelled(label)
        missing = set(self.stats["train"].examples_per_task) - set(self.stats["val"].examples_per_task)
        if self.val_examples and missing:
            self.stats["val"].note_missing_task_types(missing)  # counted in summary.json, not only logged
            log.warning("Task types with no validation examples: %s", ", ".join(sorted(missing)))
        self.train_examples = self.finalize_train(train.labelled(label))

    def _loader(
        self,
        examples: Sequence[Example],
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

    def train_dataloader(self) -> DataLoader | RepeatedBatches:
        trainer = self.trainer
        ranks = {"num_replicas": trainer.world_size if trainer else 1, "rank": trainer.global_rank if trainer else 0}
        if self.group_by_length:
            lengths = self.train_examples.lengths().tolist()
            self.train_sampler = LengthGroupedSampler(
                self.train_examples, lengths, self.batch_size, seed=self.seed, **ranks
            )
        else:
            self.train_sampler = ResumableSampler(self.train_examples, seed=self.seed, **ranks)
        loader = self._loader(self.train_examples, self.batch_size, self.train_sampler, self.train_collate_fn())
        self._train_batches = RepeatedBatches(loader, self.batch_repeats) if self.batch_repeats > 1 else None
        self._apply_resume()
        return self._train_batches or loader

    def _apply_resume(self) -> None:
        """Start the training sampler (and the repeats of its first batch) where a resumed run left off."""
        if self._resume_at is None:
            return
        epoch, skip, repeats_done = self._resume_at
        self.train_sampler.resume(epoch, skip)
        if self._train_batches is not None:
            self._train_batches.resume(repeats_done)
        self._resume_at = None

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
        """Start the next training loader at the saved position: the epoch's seeded order, minus the batches done
        (with ``batch_repeats`` R, a step is one repeat: step ``s`` of the epoch serves batch ``s // R`` for the
        ``s % R``-th time)."""
        if not state_dict:
            return
        if state_dict.get("layout") != self._data_layout():
            log.warning(
                "The training data, batch size or number of devices changed since the checkpoint (%s, now %s): "
                "the resumed data order is not the one the interrupted run would have seen.",
                state_dict.get("layout"),
                self._data_layout(),
            )
        epoch, step = divmod(state_dict["batches_done"], state_dict["batches_per_epoch"])
        batch, repeats_done = divmod(step, self.batch_repeats)
        self._resume_at = (epoch, batch * self.batch_size, repeats_done)
        # Lightning warns that a loader without state_dict cannot resume mid-epoch; this one resumes through here.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        log.info("Resuming the training data at epoch %d, batch %d (%d of its repeats served)", epoch, batch,
                 repeats_done)  # fmt: skip
        fetcher = train_data_fetcher(self.trainer) if self.trainer is not None else None
        if self.train_sampler is not None and fetcher is not None:
            # Strategies that restore after setup (FSDP, DeepSpeed, ModelParallel) built and started the loader
            # before this call: restart its iterator at the resumed position.
            self._apply_resume()
            iter(fetcher)

    def _data_layout(self) -> dict[str, int]:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        layout = {"examples": len(self.train_examples), "batch_size": self.batch_size, "world_size": world_size}
        return layout | ({"batch_repeats": self.batch_repeats} if self.batch_repeats > 1 else {})

"""Where rows come from: a local file, a local ``datasets`` folder, or anything ``datasets.load_dataset`` loads.

One spelling wherever data is given (``data.train_files``, ``data.val_files``, a mixture source's ``files`` and
``val_files``, eval's ``eval_files``): a path, or a mapping with ``datasets.load_dataset``'s own argument names
(as Axolotl spells a dataset) and two of lit-ft's, applied in this order to every row (a list of paths is one
source per path, sharing the other keys):

- ``columns``: ``{<lit-ft field>: <the dataset's column>}``, e.g. ``{messages: conversations}``: the column is read
  as that field (and no longer under its own name) before the row's format is recognised;
- ``task_types``: keep only the rows of these task types; the others are counted per task type in the split's
  :class:`~lit_ft.data.stats.SplitStats` (``filtered_rows``), never dropped silently.

For example ``data.train_files=[{path: org/dataset, name: subset, split: train, columns: {messages: chat}}]``.

Which reader, first match: a local ``.jsonl``/``.json``/``.parquet`` file or a ``save_to_disk`` folder (with no
``name``, ``data_files`` or ``revision``) is read by :func:`~lit_ft.data.readers.read_records` (errors say
``file:line``); a path that looks like a file (a data-file suffix, or more than one ``/``) and does not exist is
an error; anything else goes to ``datasets.load_dataset(path, name, split=, data_files=, revision=)``: a dataset
on the hub, a local folder of data files, a packaged builder (``{path: csv, data_files: my.csv}``); its rows are
placed ``org/dataset(subset)[split]:index``. Without ``split``, training reads the ``train`` split and validation
``validation``, else ``test``.

Offline (``HF_DATASETS_OFFLINE`` or ``HF_HUB_OFFLINE`` set, or the hub's host name does not resolve) a name is
read from the Hugging Face datasets cache, or fails at once saying it is not cached and how to get it, instead of
after huggingface_hub's retries (about 30 s), as models are loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_ft.data.readers import (
    FILE_SUFFIXES,
    TRAIN_SPLITS,
    DataError,
    Record,
    arrow_records,
    choose_split,
    is_saved_dataset,
    read_records,
)
from lit_ft.data.rows import parse_task_type
from lit_ft.models.loading import hub_unreachable

log = logging.getLogger(__name__)

# One source, or several: each a path or a mapping of :class:`RowSource`'s fields (Hydra gives DictConfigs).
Sources = str | Path | Mapping[str, Any] | Sequence[str | Path | Mapping[str, Any]] | None


def _plain(value: Any) -> Any:
    """``value`` with Hydra's containers turned into dicts and lists (``datasets`` checks for those)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class RowSource:
    """One place rows are read from (see the module's docstring for the spelling and which reader reads it).

    Args:
        path: a local file or folder, a dataset name on the hub (``org/dataset``) or a ``datasets`` builder.
        name: the dataset's subset (configuration).
        split: the split to read (``datasets`` split syntax, e.g. ``train[:1000]``); default: ``train`` for
            training, ``validation`` else ``test`` for validation.
        data_files: the files of the dataset to read (as ``load_dataset`` takes them).
        revision: the dataset's git revision on the hub (a branch, tag or commit).
        columns: ``{field: column}``: the column read as that lit-ft field.
        task_types: keep only the rows of these task types (``None``: all).
    """

    path: str
    name: str | None = None
    split: str | None = None
    data_files: Any = None
    revision: str | None = None
    columns: Mapping[str, str] = dataclasses.field(default_factory=dict)
    task_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"a data source needs a path, got {self.path!r}")
        for field, column in self.columns.items():
            if not (isinstance(field, str) and isinstance(column, str) and field and column):
                raise ValueError(f"{self}: columns maps lit-ft fields to column names, got {dict(self.columns)}")
        if self.task_types is not None and (
            not self.task_types or not all(isinstance(t, str) and t for t in self.task_types)
        ):
            raise ValueError(f"{self}: task_types must be a non-empty list of task types, got {self.task_types}")

    @classmethod
    def of(cls, value: RowSource | str | Path | Mapping[str, Any]) -> RowSource:
        """A source from a path or a mapping of its fields; an unknown key is an error that lists the known ones."""
        if isinstance(value, RowSource):
            return value
        if isinstance(value, (str, Path)):
            return cls(str(value))
        if not isinstance(value, Mapping):
            raise ValueError(f"a data source is a path or a mapping with a 'path', got {value!r}")
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(map(str, value)) - set(fields))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the data source {dict(value)} (keys: {', '.join(fields)})")
        settings = {str(key): _plain(item) for key, item in value.items()}
        settings["path"] = None if settings.get("path") is None else str(settings["path"])
        if isinstance(settings.get("task_types"), str):
            settings["task_types"] = [settings["task_types"]]
        if settings.get("task_types") is not None:
            settings["task_types"] = tuple(settings["task_types"])
        settings["columns"] = settings.get("columns") or {}
        return cls(**settings)

    def __str__(self) -> str:
        """``path``, with the subset and split when given: ``org/dataset(subset)[train]``."""
        return self._placed(self.split)

    def _placed(self, split: str | None) -> str:
        return self.path + (f"({self.name})" if self.name else "") + (f"[{split}]" if split else "")

    @property
    def stem(self) -> str:
        """A short name: the file's or dataset's name without folders or suffix (``train``, ``dataset``)."""
        return Path(self.path).stem

    def _read_locally(self) -> bool:
        """Whether lit-ft's own readers read this source (a local data file or ``save_to_disk`` folder)."""
        if self.name is not None or self.data_files is not None or self.revision is not None:
            return False
        path = Path(self.path).expanduser()
        if path.is_file() or (path.is_dir() and is_saved_dataset(path)):
            return True
        if not path.exists() and (path.suffix in FILE_SUFFIXES or self.path.count("/") > 1):
            raise FileNotFoundError(f"Data file '{self.path}' does not exist")
        return False

    def records(self, splits: tuple[str, ...] = TRAIN_SPLITS) -> Iterator[Record]:
        """Every row of the source as read, before ``columns`` and ``task_types``; of a ``DatasetDict``, ``split``
        or else the first of ``splits`` it has."""
        splits = (self.split,) if self.split else splits
        if self._read_locally():
            yield from read_records(Path(self.path).expanduser(), splits)
            return
        dataset = self._load_dataset()
        split = self.split
        if split is None:  # no split asked: load_dataset gave every split
            split = choose_split(dataset, splits, str(self))
            dataset = dataset[split]
        yield from arrow_records(dataset, self._placed(split))

    def read(self, splits: tuple[str, ...] = TRAIN_SPLITS) -> tuple[list[Record], Counter[str]]:
        """The rows of the source with ``columns`` applied and ``task_types`` kept, and the task types of the rows
        the filter left out (how many of each). A source with no rows at all is an error."""
        rows = [self.mapped(record) for record in self.records(splits)]
        if not rows:
            empty = "the file holds no rows (it is empty or has only blank lines)"
            raise DataError(str(self), empty if Path(self.path).is_file() else "the data source holds no rows")
        if self.task_types is None:
            return rows, Counter()
        kept, left_out = [], Counter()
        for record in rows:
            task_type = parse_task_type(record.row, record.where)
            if task_type in self.task_types:
                kept.append(record)
            else:
                left_out[task_type] += 1
        return kept, left_out

    def mapped(self, record: Record) -> Record:
        """The row with each mapped column read as its lit-ft field (the column's own name, and a column named
        like a mapped field, no longer in it). A missing column is a :class:`DataError` naming the columns there."""
        if not self.columns:
            return record
        row = record.row
        for field, column in self.columns.items():
            if column not in row:
                raise DataError(
                    record.where,
                    f"no column '{column}' to read '{field}' from (columns={dict(self.columns)}); the columns are "
                    f"{', '.join(map(repr, sorted(row)))}",
                    f"columns.{field}",
                )
        renamed = set(self.columns.values()) | set(self.columns)
        kept = {key: value for key, value in row.items() if key not in renamed}
        return Record(record.where, {**kept, **{field: row[column] for field, column in self.columns.items()}})

    def fingerprint(self) -> str:
        """A hash of this source's settings and of the rows it reads, what cached examples are keyed on
        (:mod:`lit_ft.data.cache`): a local file's or folder's contents, or a loaded dataset's cache files (which
        ``datasets`` names by a fingerprint of their contents)."""
        digest = hashlib.sha256(repr(dataclasses.astuple(self)).encode())
        path = Path(self.path).expanduser()
        if path.exists():
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                with file.open("rb") as handle:
                    digest.update(file.relative_to(path).as_posix().encode() if file != path else b"")
                    digest.update(hashlib.file_digest(handle, "sha256").digest())
            return digest.hexdigest()
        dataset = self._load_dataset()
        cache_files = dataset.cache_files
        splits = cache_files.values() if isinstance(cache_files, dict) else [cache_files]
        for file in sorted(entry["filename"] for split in splits for entry in split):
            digest.update(f"{Path(file).name}:{Path(file).stat().st_size}".encode())
        return digest.hexdigest()

    def _load_dataset(self) -> Any:
        """``datasets.load_dataset`` of this source: a ``Dataset`` when ``split`` is given, else a ``DatasetDict``.
        Offline, from the cache only; a failure is a :class:`DataError` naming the source."""
        import datasets

        offline = not Path(self.path).exists() and (datasets.config.HF_HUB_OFFLINE or hub_unreachable())
        if offline:
            log.info(
                "The Hugging Face hub cannot be reached: '%s' is read from the datasets cache or local files", self
            )
        try:
            with _datasets_offline(offline):
                return datasets.load_dataset(
                    self.path, self.name, split=self.split, data_files=self.data_files, revision=self.revision
                )
        except (OSError, ValueError) as error:
            if offline and isinstance(error, ConnectionError):  # what datasets raises offline for a name not cached
                raise DataError(str(self), self._not_cached(error)) from error
            raise DataError(str(self), f"datasets.load_dataset cannot load it: {error}") from error

    def _not_cached(self, error: Exception) -> str:
        """The offline failure: not a local path, not in the cache, why the hub was not asked, how to get it."""
        import datasets

        why = (
            "HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set"
            if datasets.config.HF_HUB_OFFLINE
            else "the Hugging Face hub cannot be reached"
        )
        arguments = ", ".join([repr(self.path), *([repr(self.name)] if self.name else [])])
        cached_as = "___".join(self.path.split("/"))
        return (
            f"not a local file or folder, and not in the Hugging Face datasets cache ({datasets.config.HF_DATASETS_CACHE})"
            f"; {why}, so it cannot be downloaded ({error}). To get it, run on a machine with network access: "
            f'python -c "import datasets; datasets.load_dataset({arguments})", then copy its cache folder '
            f"'{cached_as}' into this machine's cache (or point HF_DATASETS_CACHE at a copy), or save it with "
            "save_to_disk and give that folder as the path"
        )


@contextmanager
def _datasets_offline(offline: bool) -> Iterator[None]:
    """``datasets`` reads ``HF_HUB_OFFLINE`` once, at import: set its flag for one load when the hub cannot be
    reached, so that ``load_dataset`` goes straight to the cache. Offline, its two warnings that it read the cache
    are left out (lit-ft's own log line says so)."""
    import datasets

    before, verbosity = datasets.config.HF_HUB_OFFLINE, datasets.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = before or offline
    if offline:
        datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before
        datasets.logging.set_verbosity(verbosity)


def source_list(sources: Sources | Iterable[RowSource]) -> list[RowSource]:
    """``sources`` (one, several or ``None``; paths or mappings) as a list of :class:`RowSource`. A mapping whose
    ``path`` is a list is one source per path, each with the mapping's other settings (``{path: [a.jsonl,
    b.jsonl], task_types: [flag]}``: what ``data.train_files.path=[a.jsonl,b.jsonl]`` gives a config whose
    source is a mapping)."""
    if sources is None:
        return []
    if isinstance(sources, (str, Path, Mapping, RowSource)):
        sources = [sources]
    return [RowSource.of(one) for source in sources for one in _one_per_path(source)]


def _one_per_path(source: Any) -> list[Any]:
    """``source``, or one copy of it per path when it is a mapping whose ``path`` is a list."""
    paths = source.get("path") if isinstance(source, Mapping) else None
    if isinstance(paths, (str, Path)) or not isinstance(paths, Sequence):
        return [source]
    if not paths:
        raise ValueError(f"a data source needs a path, got an empty list in {_plain(source)}")
    return [{**_plain(source), "path": path} for path in _plain(paths)]

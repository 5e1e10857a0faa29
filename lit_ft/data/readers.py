"""Read rows from JSONL, JSON, Parquet files and `datasets` folders, each tagged with where it came from.

JSON and JSONL are read by hand rather than through ``datasets.load_dataset("json")`` so that a broken
line is reported with its file and line number, which Arrow's JSON reader does not give. A row of Arrow data
(Parquet, a ``datasets`` folder or dataset) is placed by its index from 0, as ``dataset[12]`` finds it:
``d.parquet:12``, ``folder[train]:12``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A row that cannot be used, with the place (file and line) and field that are wrong."""

    def __init__(self, where: str, message: str, field: str | None = None) -> None:
        self.where, self.field = where, field
        super().__init__(f"{where}: " + (f"field '{field}': " if field else "") + message)


@dataclass(frozen=True)
class Record:
    """One raw row and its place, for example ``data/legal/train.jsonl:12``."""

    where: str
    row: dict[str, Any]


def _check_object(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(where, f"expected a JSON object, got {type(value).__name__}")
    return value


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(where, f"invalid UTF-8 at byte {error.start}") from error
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(where, f"malformed JSON: {error.msg} (column {error.colno})") from error
            yield Record(where, _check_object(where, value))


def _read_json(path: Path) -> Iterator[Record]:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(str(path), f"not valid UTF-8 JSON ({error})") from error
    if not isinstance(value, list):
        raise DataError(str(path), "a .json data file must hold a list of objects (use .jsonl for one object a line)")
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        yield Record(where, _check_object(where, item))


def arrow_records(rows: Any, name: str) -> Iterator[Record]:
    """The rows of Arrow data (a ``datasets.Dataset``, a list of dicts) as records placed ``name:index``."""
    for index, row in enumerate(rows):
        yield Record(f"{name}:{index}", dict(row))


# The file formats read_records reads (others through ``datasets.load_dataset``: see :mod:`lit_ft.data.sources`).
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# The splits of a ``DatasetDict`` read for training, and for validation (the first one it has).
TRAIN_SPLITS = ("train",)
VAL_SPLITS = ("validation", "test")


def choose_split(splits_held: Any, splits: tuple[str, ...], where: str) -> str:
    """The first of ``splits`` that ``splits_held`` (a ``DatasetDict``, or its split names) has."""
    chosen = next((name for name in splits if name in splits_held), None)
    if chosen is None:
        raise DataError(where, f"no split {' or '.join(map(repr, splits))} (has {sorted(splits_held)})")
    return chosen


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    from datasets import config

    return (path / config.DATASET_STATE_JSON_FILENAME).is_file() or (path / config.DATASETDICT_JSON_FILENAME).is_file()


def read_records(path: str | Path, splits: tuple[str, ...] = TRAIN_SPLITS) -> Iterator[Record]:
    """Yield the rows of a data file or a ``datasets`` folder saved with ``save_to_disk``.

    Args:
        path: ``.jsonl``, ``.json``, ``.parquet`` file, or a folder written by ``Dataset.save_to_disk``.
        splits: the splits to try in order when the folder holds a ``DatasetDict`` (the first it has is read).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Data file '{path}' does not exist")
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(path))
        chosen = splits[0]
        if isinstance(dataset, DatasetDict):
            chosen = choose_split(dataset, splits, str(path))
            dataset = dataset[chosen]
        yield from arrow_records(dataset, f"{path}[{chosen}]")
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif path.suffix == ".json":
        yield from _read_json(path)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from arrow_records(pq.read_table(path).to_pylist(), str(path))
    else:
        raise DataError(
            str(path),
            "unknown data format (expected .jsonl, .json, .parquet or a datasets folder; other formats through "
            f"datasets, e.g. {{path: {path.suffix.lstrip('.') or 'csv'}, data_files: {path}, split: train}})",
        )


def evenly_spaced(items: list, limit: int | None) -> list:
    """``limit`` items spread evenly over ``items`` (all when ``limit`` is None): keeps a file's subject mix."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def load_passages(path: str | Path, limit: int | None = None) -> list[str]:
    """The ``text`` of each row of a JSONL file."""
    passages = []
    for record in read_records(path):
        if not isinstance(record.row.get("text"), str) or not record.row["text"].strip():
            raise DataError(record.where, "expected a non-empty string", "text")
        passages.append(record.row["text"])
    return evenly_spaced(passages, limit)

"""Tokenised examples on disk: written once to an Arrow IPC file, then memory-mapped and read row by row.

pyarrow's IPC file format is read with zero copy from a memory map, so a process holds only the rows it is
reading: the examples of a large dataset stay out of Python lists (and out of RAM), and every process of a node
maps the same pages. ``datasets.Dataset`` stores the same Arrow files, but adds a fingerprint cache of its own,
which cannot key on what lit-ft's cache keys on (:mod:`lit_ft.data.cache`), and slower row access.

Two layouts, mirroring :mod:`lit_ft.data.batch`: an SFT/CPT example (``input_ids``, ``labels``, ``task_type``) and a
preference pair (``chosen`` and ``rejected``, each ``{input_ids, labels}``, ``task_type``, ``margin``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ft.data.batch import IGNORE_INDEX

_TOKEN_IDS = pa.list_(pa.int32())
TOKENS = pa.struct([("input_ids", _TOKEN_IDS), ("labels", _TOKEN_IDS)])
EXAMPLE_SCHEMA = pa.schema([("input_ids", _TOKEN_IDS), ("labels", _TOKEN_IDS), ("task_type", pa.string())])
PAIR_SCHEMA = pa.schema(
    [("chosen", TOKENS), ("rejected", TOKENS), ("task_type", pa.string()), ("margin", pa.float64())]
)
ROWS_PER_BATCH = 2048  # rows per Arrow record batch: what is held in memory while writing


def write_examples(path: Path, examples: Iterable[dict[str, Any]], schema: pa.Schema) -> int:
    """Write ``examples`` (dicts of ``schema``'s fields) to an Arrow IPC file at ``path``, a batch at a time, so an
    iterator of examples is never all in memory; returns how many were written."""
    examples = iter(examples)
    count = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        while batch := list(itertools.islice(examples, ROWS_PER_BATCH)):
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


class RowSequence(Sequence[dict[str, Any]]):
    """A sequence whose rows are built when read (by :meth:`row`); a slice gives a list of them."""

    def row(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int | slice) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return [self.row(i) for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        return self.row(int(index) % len(self))


class ArrowExamples(RowSequence):
    """The examples of one Arrow IPC file, memory-mapped: ``examples[i]`` is a fresh dict of Python lists (a caller
    may change it), read in about 20 µs for a few hundred tokens.

    Pickled (to DataLoader workers) as its path; each process maps the file again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.table = pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.table.to_batches():
            yield from batch.to_pylist()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def _token_lists(self, field: str) -> list[pa.ChunkedArray]:
        """The ``field`` (``input_ids`` or ``labels``) column of each of an example's sequences: the example's own,
        or the ``chosen`` and ``rejected`` ones of a pair."""
        if field in self.table.column_names:
            return [self.table.column(field)]
        return [
            pc.struct_field(self.table.column(name), field)
            for name, kind in zip(self.table.column_names, self.table.schema.types)
            if kind == TOKENS
        ]

    def lengths(self) -> np.ndarray:
        """[N] tokens of each example's longest sequence (what a padded batch is padded to)."""
        lengths = [
            pc.list_value_length(column).to_numpy(zero_copy_only=False) for column in self._token_lists("input_ids")
        ]
        return np.max(lengths, axis=0) if lengths else np.zeros(0, dtype=np.int64)

    def loss_tokens(self) -> np.ndarray:
        """[N] loss tokens (labels other than -100) of each example, its sequences summed."""
        total = np.zeros(len(self), dtype=np.int64)
        for column in self._token_lists("labels"):
            start = 0
            for chunk in column.chunks:
                offsets = chunk.offsets.to_numpy() - chunk.offsets[0].as_py()
                counted = np.concatenate([[0], np.cumsum(chunk.flatten().to_numpy() != IGNORE_INDEX)])
                total[start : start + len(chunk)] += counted[offsets[1:]] - counted[offsets[:-1]]
                start += len(chunk)
        return total

    def task_type_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each example's task type as a code [N] into the task types it names."""
        encoded = pc.dictionary_encode(self.table.column("task_type")).combine_chunks()
        return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()

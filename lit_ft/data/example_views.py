"""The examples a DataModule serves: rows of its example files (:mod:`lit_ft.data.example_store`) in the order an
epoch draws them, labelled with their task ids; and packs of several."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lit_ft.data.batch import Example, PackedExample
from lit_ft.data.example_store import ArrowExamples, RowSequence
from lit_ft.data.packing import concatenate_examples

# Labels an example read from its file in place: (example, its position in the view).
Labeller = Callable[[dict[str, Any], int], None]


class ExampleView(RowSequence):
    """``view[i]`` is row ``rows[i]`` of ``stores[sources[i]]``, labelled by ``label(example, i)`` (its task id);
    nothing is held but the two index arrays [N].

    Args:
        stores: the example files, one per source.
        sources / rows: [N] each example's file and row (a mixture's draw repeats or leaves out rows).
        label: sets what is known only once every split is read (the task id); ``None`` leaves the rows as stored.
    """

    def __init__(
        self,
        stores: Sequence[ArrowExamples],
        sources: np.ndarray,
        rows: np.ndarray,
        label: Labeller | None = None,
    ) -> None:
        if len(sources) != len(rows):
            raise ValueError("one source per row")
        self.stores, self.sources, self.rows, self.label = list(stores), np.asarray(sources), np.asarray(rows), label

    @classmethod
    def of(cls, store: ArrowExamples) -> ExampleView:
        """Every row of one file, in order."""
        return cls([store], np.zeros(len(store), dtype=np.int64), np.arange(len(store)))

    def labelled(self, label: Labeller) -> ExampleView:
        return ExampleView(self.stores, self.sources, self.rows, label)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, index: int) -> Example:
        example = self.stores[self.sources[index]].row(int(self.rows[index]))
        if self.label is not None:
            self.label(example, index)
        return example

    def _gather(self, per_store: Callable[[ArrowExamples], np.ndarray]) -> np.ndarray:
        """[N] ``per_store(store)[row]`` of each example."""
        out = np.zeros(len(self), dtype=np.int64)
        for index, store in enumerate(self.stores):
            mine = self.sources == index
            out[mine] = per_store(store)[self.rows[mine]]
        return out

    def lengths(self) -> np.ndarray:
        """[N] tokens of each example's longest sequence."""
        return self._gather(ArrowExamples.lengths)

    def loss_tokens(self) -> np.ndarray:
        """[N] loss tokens of each example."""
        return self._gather(ArrowExamples.loss_tokens)

    def task_types(self) -> set[str]:
        """The task types of the examples."""
        names: set[str] = set()
        for index, store in enumerate(self.stores):
            codes, types = store.task_type_codes()
            names.update(types[code] for code in np.unique(codes[self.rows[self.sources == index]]))
        return names


class PackedExamples(RowSequence):
    """``packs[i]``'s examples back to back (:func:`~lit_ft.data.packing.concatenate_examples`), built when read."""

    def __init__(self, examples: ExampleView, packs: Sequence[Sequence[int]]) -> None:
        self.examples, self.packs = examples, [list(pack) for pack in packs]

    def __len__(self) -> int:
        return len(self.packs)

    def row(self, index: int) -> PackedExample:
        return concatenate_examples([self.examples.row(member) for member in self.packs[index]])

    def lengths(self) -> np.ndarray:
        """[N] tokens of each pack."""
        lengths = self.examples.lengths()
        return np.array([sum(int(lengths[member]) for member in pack) for pack in self.packs], dtype=np.int64)

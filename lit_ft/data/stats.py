"""Counts of what happened to the rows of a split on their way to training examples, nothing dropped silently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from lit_ft.data.batch import TokenizedExample, loss_tokens
from lit_ft.data.truncation import Truncated


@dataclass
class SplitStats:
    """Per-split accounting: every row is either kept or counted under the reason it was dropped.

    Only these methods write the fields (training's DataModules and the data report alike): :meth:`count` for each
    row, :meth:`count_blocks` for the long documents cut into blocks (``long_documents=blocks``) of a source,
    :meth:`count_unused_rows`, :meth:`count_filtered_rows`, :meth:`note_missing_task_types` and
    :meth:`count_sources` once per split.
    """

    rows: int = 0
    examples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    truncated_examples: int = 0
    truncated_tokens: int = 0
    dropped_too_long: int = 0
    dropped_no_loss_tokens: int = 0
    documents_split: int = 0  # rows longer than max_length cut into blocks (long_documents=blocks), not truncated
    blocks: int = 0  # the examples cut from them (counted in `examples` too)
    unused_rows: int = 0  # left out by max_val_rows (not counted in `rows`)
    # per task type, the rows a source's task_types filter left out (not counted in `rows`)
    filtered_rows: Counter = field(default_factory=Counter)
    examples_per_task: Counter = field(default_factory=Counter)
    task_types_missing: list[str] = field(default_factory=list)  # training task types absent from this split
    # per mixture source: normalised weight, examples available and drawn per epoch, share of loss tokens
    sources: dict = field(default_factory=dict)

    def count(self, truncated: Truncated, task_type: str) -> None:
        """One row: kept (its tokens, loss tokens and task type; truncated when anything was cut), or dropped and
        counted under its reason."""
        self.rows += 1
        if truncated.dropped == "too_long":
            self.dropped_too_long += 1
        elif truncated.dropped == "no_loss_tokens":
            self.dropped_no_loss_tokens += 1
        else:
            self.examples += 1
            self.examples_per_task[task_type] += 1
            self.tokens += truncated.tokens
            self.loss_tokens += truncated.loss_tokens
            if truncated.cut_tokens:
                self.truncated_examples += 1
                self.truncated_tokens += truncated.cut_tokens

    def count_blocks(self, documents: int, blocks: Sequence[TokenizedExample]) -> None:
        """``documents`` rows cut into ``blocks`` (:func:`~lit_ft.data.blocks.make_blocks`): the rows, and the blocks
        as examples (their tokens, loss tokens and task types)."""
        self.rows += documents
        self.documents_split += documents
        self.blocks += len(blocks)
        self.examples += len(blocks)
        for block in blocks:
            self.examples_per_task[block["task_type"]] += 1
            self.tokens += len(block["input_ids"])
            self.loss_tokens += int(loss_tokens(block["labels"]))

    def count_unused_rows(self, rows: int) -> None:
        """Rows of the split left out (``max_val_rows``); they are not in :attr:`rows`."""
        self.unused_rows += rows

    def count_filtered_rows(self, per_task_type: Mapping[str, int]) -> None:
        """Rows left out by a source's ``task_types`` filter, per task type; they are not in :attr:`rows`."""
        self.filtered_rows.update(per_task_type)

    def note_missing_task_types(self, task_types: Iterable[str]) -> None:
        """Training task types with no example in this split (sorted)."""
        self.task_types_missing = sorted(task_types)

    def count_sources(
        self,
        labels: Sequence[str],
        weights: Sequence[float],
        examples: Sequence[int],
        drawn: Sequence[int],
        loss_tokens: Sequence[int],
    ) -> None:
        """Per mixture source, in order: its weight over the mixture's total, its examples, the examples drawn
        from it per epoch and its share of the drawn examples' loss tokens."""
        total_weight, total_loss_tokens = sum(weights), max(1, sum(loss_tokens))
        self.sources = {
            label: {
                "weight": weight / total_weight,
                "examples": available,
                "drawn": taken,
                "loss_token_share": tokens / total_loss_tokens,
            }
            for label, weight, available, taken, tokens in zip(labels, weights, examples, drawn, loss_tokens)
        }

    def describe(self, name: str) -> str:
        text = (
            f"{name}: {self.rows} rows -> {self.examples} examples, {self.tokens} tokens ({self.loss_tokens} with loss)"
        )
        if self.truncated_examples:
            text += f"; truncated {self.truncated_examples} examples ({self.truncated_tokens} tokens cut)"
        if self.documents_split:
            text += f"; {self.documents_split} documents longer than max_length cut into {self.blocks} blocks"
        if self.dropped_too_long:
            text += f"; dropped {self.dropped_too_long} longer than max_length"
        if self.dropped_no_loss_tokens:
            text += f"; dropped {self.dropped_no_loss_tokens} with no loss tokens left after truncation"
        if self.unused_rows:
            text += f"; {self.unused_rows} more rows left out (max_val_rows)"
        if self.filtered_rows:
            left_out = ", ".join(f"{count} {task}" for task, count in sorted(self.filtered_rows.items()))
            text += f"; {sum(self.filtered_rows.values())} more rows left out by task_types ({left_out})"
        if self.task_types_missing:
            text += f"; no examples of task types {', '.join(self.task_types_missing)}"
        return text

    @classmethod
    def from_dict(cls, data: Mapping) -> SplitStats:
        """The stats :meth:`to_dict` wrote (the cached examples' ``stats.json``)."""
        counters = {name: Counter(data[name]) for name in ("filtered_rows", "examples_per_task")}
        return cls(**{**data, **counters})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["examples_per_task"] = dict(sorted(self.examples_per_task.items()))
        data["filtered_rows"] = dict(sorted(self.filtered_rows.items()))
        return data

"""Counts of what happened to the rows of a split on their way to training examples, nothing dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class SplitStats:
    """Per-split accounting: every row is either kept or counted under the reason it was dropped."""

    rows: int = 0
    examples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    truncated_examples: int = 0
    truncated_tokens: int = 0
    dropped_too_long: int = 0
    dropped_no_loss_tokens: int = 0
    unused_rows: int = 0  # left out by max_val_rows (not counted in `rows`)
    examples_per_task: Counter = field(default_factory=Counter)
    task_types_missing: list[str] = field(default_factory=list)  # training task types absent from this split
    # per mixture source: normalised weight, examples available and drawn per epoch, share of loss tokens
    sources: dict = field(default_factory=dict)

    def describe(self, name: str) -> str:
        text = (
            f"{name}: {self.rows} rows -> {self.examples} examples, {self.tokens} tokens ({self.loss_tokens} with loss)"
        )
        if self.truncated_examples:
            text += f"; truncated {self.truncated_examples} examples ({self.truncated_tokens} tokens cut)"
        if self.dropped_too_long:
            text += f"; dropped {self.dropped_too_long} longer than max_length"
        if self.dropped_no_loss_tokens:
            text += f"; dropped {self.dropped_no_loss_tokens} with no loss tokens left after truncation"
        if self.unused_rows:
            text += f"; {self.unused_rows} more rows left out (max_val_rows)"
        if self.task_types_missing:
            text += f"; no examples of task types {', '.join(self.task_types_missing)}"
        return text

    def to_dict(self) -> dict:
        data = asdict(self)
        data["examples_per_task"] = dict(sorted(self.examples_per_task.items()))
        return data

"""Label-like task types: parse a label out of a generation and score it as classification.

The parser (:class:`LabelParser`) is a regular expression searched case-insensitively in the text; the label is
its first match's group 1 (the whole match when the pattern has no group), stripped, lower-cased, with runs of
whitespace as one space. References go through the same parser, so a reference ``FLAG: NON-STANDARD - uncapped
liability`` and a generation ``flag: non-standard, because ...`` both give ``non-standard``. A generation with no
match is *unparsed*: it counts as wrong for accuracy, as its own class (never a reference label) for multi-class
precision/recall, and as a negative prediction for binary precision/recall; ``parse_rate`` reports how often the
model kept the answer format. Examples whose reference does not parse are left out (``unparsed_references``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torchmetrics.functional.classification import (
    binary_f1_score,
    binary_precision,
    binary_recall,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def normalised_label(label: str) -> str:
    """A label as parsers return it: stripped, lower-cased, runs of whitespace as one space."""
    return " ".join(label.split()).lower()


@dataclass
class LabelParser:
    """``parser(text)`` -> the normalised label, or ``None`` when ``pattern`` does not match."""

    pattern: str

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern, re.IGNORECASE)

    def __call__(self, text: str) -> str | None:
        match = self._regex.search(text)
        if match is None:
            return None
        label = match.group(1) if self._regex.groups else match.group(0)
        return normalised_label(label) if label is not None else None


@dataclass
class LabelMetrics:
    """Task metric for answers that carry a label.

    Multi-class (``positive`` unset): ``accuracy`` and macro-averaged ``precision``, ``recall``, ``f1`` over the
    label set (``labels``, or every label seen in the references or predictions, unparsed excluded).
    Binary (``positive`` set, e.g. ``non-standard``): ``accuracy`` and ``precision``, ``recall``, ``f1`` of the
    positive label. Both also give ``parse_rate`` and ``n``.

    Args:
        pattern: the :class:`LabelParser` regular expression (``TYPE:\\s*([a-z_]+)``).
        positive: the positive label of a binary task (compared after normalisation).
        labels: the label set of a multi-class task (default: those seen).
    """

    pattern: str
    positive: str | None = None
    labels: Sequence[str] | None = None
    parser: LabelParser = field(init=False)

    def __post_init__(self) -> None:
        self.parser = LabelParser(self.pattern)
        self.positive = self.positive.lower() if self.positive else None

    def example(self, prediction: str, reference: str) -> dict[str, Any]:
        predicted, expected = self.parser(prediction), self.parser(reference)
        return {
            "label": predicted,
            "reference_label": expected,
            "correct": predicted is not None and predicted == expected,
        }

    def aggregate(self, examples: Sequence[dict[str, Any]]) -> dict[str, float | int]:
        scored = [e for e in examples if e["reference_label"] is not None]
        if not scored:
            return {}
        result = {
            "n": len(scored),
            "accuracy": sum(e["correct"] for e in scored) / len(scored),
            "parse_rate": sum(e["label"] is not None for e in scored) / len(scored),
        }
        if len(scored) < len(examples):
            result["unparsed_references"] = len(examples) - len(scored)
        predicted = [e["label"] for e in scored]
        expected = [e["reference_label"] for e in scored]
        if self.positive is not None:
            preds = torch.tensor([p == self.positive for p in predicted], dtype=torch.long)
            target = torch.tensor([t == self.positive for t in expected], dtype=torch.long)
            scores = (binary_precision(preds, target), binary_recall(preds, target), binary_f1_score(preds, target))
        else:
            if self.labels:
                names = [str(label).lower() for label in self.labels]
            else:
                names = sorted({*expected, *(p for p in predicted if p is not None)})
            index = {name: i for i, name in enumerate(names)}
            other = len(names)  # unparsed or out-of-set predictions: a class of their own, left out of the average
            preds = torch.tensor([index.get(p, other) if p is not None else other for p in predicted])
            target = torch.tensor([index.get(t, other) for t in expected])
            kwargs = {"num_classes": len(names) + 1, "average": None}
            per_class = (
                multiclass_precision(preds, target, **kwargs),
                multiclass_recall(preds, target, **kwargs),
                multiclass_f1_score(preds, target, **kwargs),
            )
            scores = tuple(values[: len(names)].mean() for values in per_class)
        result.update(zip(("precision", "recall", "f1"), (float(s) for s in scores)))
        return result

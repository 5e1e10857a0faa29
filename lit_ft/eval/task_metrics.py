"""Task metrics chosen per task type: score each generation against its reference, then aggregate per task type.

A task metric has two methods: ``example(prediction, reference) -> dict`` (kept with the generation in
``generations.jsonl``) and ``aggregate(examples) -> dict[str, float]`` (over the examples of one task type), so a
saved generations file can be scored again without the model. Which metric a task type gets is configuration
(``conf/task_metrics/``): a mapping ``task_type -> metric``, with ``default`` for task types not listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

DEFAULT_KEY = "default"


class TaskMetric(Protocol):
    def example(self, prediction: str, reference: str) -> dict[str, Any]: ...

    def aggregate(self, examples: Sequence[dict[str, Any]]) -> dict[str, float]: ...


def metric_for(metrics: Mapping[str, TaskMetric], task_type: str) -> TaskMetric | None:
    """The metric configured for ``task_type``, else the ``default`` one, else ``None`` (not scored)."""
    return metrics.get(task_type, metrics.get(DEFAULT_KEY))


def score_generations(rows: list[dict[str, Any]], metrics: Mapping[str, TaskMetric]) -> dict[str, dict[str, float]]:
    """Add ``scores`` to every row that has a ``reference`` and return the aggregate per task type.

    Args:
        rows: ``{"task_type", "generation", "reference", ...}`` dicts (changed in place).
        metrics: task type (or ``default``) -> task metric.
    """
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        metric = metric_for(metrics, row["task_type"])
        if metric is None or row.get("reference") is None:
            continue
        row["scores"] = metric.example(row["generation"], row["reference"])
        by_task.setdefault(row["task_type"], []).append(row["scores"])
    return {task: metric_for(metrics, task).aggregate(examples) for task, examples in sorted(by_task.items())}


def logged_scores(per_task: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{task: {metric: value}}`` -> ``{"val/<metric>/<task>": value}``, the order ``val/loss/<task>`` uses;
    counts (``n``: ints) stay out: they are what was scored, not a score."""
    return {
        f"val/{metric}/{task}": value
        for task, values in per_task.items()
        for metric, value in values.items()
        if isinstance(value, float)
    }

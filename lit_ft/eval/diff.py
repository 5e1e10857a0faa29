"""Compare two runs per task type: which task type (or general-ability metric) moved, biggest regressions first.

Each side is a run folder (its ``eval.json`` when there is one, else its training ``summary.json``) or one of
those files. Both are read into ``{task_type: {metric: value}}``:

- ``eval.json`` (``eval.py``): ``per_task`` as is, ``overall`` as task ``all``, ``forgetting`` as task ``general``;
- ``summary.json`` (``train.py``): ``val_loss_after``/``val_ppl_after`` as ``all``/``loss``, ``ppl``;
  ``per_task[t]["val_<m>_after"]`` as ``t``/``<m>``; ``forgetting.final`` as ``general``.

A metric's direction comes from its name: loss and perplexity (``loss``, ``ppl``, ``*_ppl``) are better lower,
every other score better higher; counts (``n``, ``tokens``, ``examples``...) are not compared. Rows are sorted by
the relative change in the good direction, ``sign * (B - A) / |A|``, most negative (the worst regression) first.

CLI: ``python -m lit_ft.eval.diff logs/eval_base logs/eval_lora``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

COUNTS = {"n", "tokens", "examples", "unparsed_references", "wins", "losses", "ties", "questions", "passages"}
Metrics = dict[str, dict[str, float]]


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or metric == "ppl" or metric.endswith("_ppl")


def _numbers(values: dict[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (values or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in COUNTS and math.isfinite(v)
    }


def _from_eval(data: dict[str, Any]) -> Metrics:
    metrics = {task: _numbers(values) for task, values in data.get("per_task", {}).items()}
    metrics["all"] = _numbers(data.get("overall"))
    metrics["general"] = _numbers(data.get("forgetting"))
    return metrics


def _from_summary(data: dict[str, Any]) -> Metrics:
    metrics: Metrics = {"all": {}}
    for key, name in (("val_loss_after", "loss"), ("val_ppl_after", "ppl")):
        if isinstance(data.get(key), (int, float)):
            metrics["all"][name] = float(data[key])
    for task, values in (data.get("per_task") or {}).items():
        after = {
            k[len("val_") : -len("_after")]: v
            for k, v in values.items()
            if k.startswith("val_") and k.endswith("_after")
        }
        metrics[task] = _numbers(after)
    forgetting = data.get("forgetting") or {}
    metrics["general"] = _numbers(forgetting.get("final") if isinstance(forgetting.get("final"), dict) else forgetting)
    return metrics


def load_run_metrics(path: str | Path) -> Metrics:
    """``{task_type: {metric: value}}`` of a run folder, ``eval.json`` or ``summary.json`` (empty tasks dropped)."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "eval.json", path / "summary.json"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{candidates[0].parent} has neither eval.json nor summary.json")
    data = json.loads(path.read_text())
    metrics = _from_eval(data) if "per_task" in data and "overall" in data else _from_summary(data)
    return {task: values for task, values in metrics.items() if values}


@dataclass
class Delta:
    task_type: str
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def improvement(self) -> float | None:
        """Relative change in the metric's good direction (negative: a regression)."""
        if self.delta is None:
            return None
        sign = -1.0 if lower_is_better(self.metric) else 1.0
        return sign * self.delta / max(abs(self.a), 1e-12) + 0.0  # + 0.0: no "-0.0%" for an unchanged loss

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta": self.delta, "improvement": self.improvement}


def diff_runs(a: Metrics, b: Metrics) -> list[Delta]:
    """Every (task type, metric) of either run; compared ones sorted worst regression first, then one-sided ones."""
    keys = sorted({(t, m) for run in (a, b) for t, values in run.items() for m in values})
    rows = [Delta(t, m, a.get(t, {}).get(m), b.get(t, {}).get(m)) for t, m in keys]
    return sorted(rows, key=lambda r: (r.improvement is None, r.improvement if r.improvement is not None else 0.0))


def print_diff(rows: list[Delta], name_a: str, name_b: str, console: Console | None = None) -> None:
    table = Table(title=f"A = {name_a}   B = {name_b}   (worst regression first)")
    for column in ("task_type", "metric", "A", "B", "B - A", "change"):
        table.add_column(column, justify="left" if column in ("task_type", "metric") else "right")
    for row in rows:
        change = row.improvement
        style = "" if change is None or abs(change) < 1e-9 else ("red" if change < 0 else "green")
        table.add_row(
            row.task_type,
            row.metric + (" (lower better)" if lower_is_better(row.metric) else ""),
            "-" if row.a is None else f"{row.a:.4f}",
            "-" if row.b is None else f"{row.b:.4f}",
            "-" if row.delta is None else f"{row.delta:+.4f}",
            "-" if change is None else f"[{style}]{100 * change:+.1f}%[/]" if style else f"{100 * change:+.1f}%",
        )
    (console or Console()).print(table)


def main(argv: Sequence[str] | None = None) -> list[Delta]:
    parser = argparse.ArgumentParser(prog="python -m lit_ft.eval.diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="run folder, eval.json or summary.json (the baseline)")
    parser.add_argument("b", help="run folder, eval.json or summary.json (the new run)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = diff_runs(load_run_metrics(args.a), load_run_metrics(args.b))
    print_diff(rows, args.a, args.b)
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()

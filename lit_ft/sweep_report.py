"""Sweep report: one table comparing the jobs of a Hydra multirun, best first.

``python train.py -m experiment=lora_legal peft.r=4,8,16,32`` writes each job to ``<sweep_dir>/<job number>/``
(``conf/hydra/default.yaml``); when the multirun ends, :class:`SweepReport` (a Hydra callback) writes
``sweep_report.md``, ``sweep_report.csv`` and ``sweep_val_loss.png`` into the sweep folder. To rebuild them from
an existing folder (also a partial or interrupted sweep)::

    python -m lit_ft.sweep_report logs/lora_legal/multirun/2025-01-01_12-00-00

Per job: the overrides that differ between jobs (the ones all share are listed once above the table), the best
validation loss (over the checks after some training), the final one, the per-task validation losses at the best
check (``val/loss/<task>`` from the run's history in ``summary.json``), the task scores after training
(``val/<metric>/<task>`` from ``task_scores`` in ``summary.json``, when the run had the ``task_scores`` callback), the
forgetting deltas (``forgetting`` in ``summary.json``), trainable parameters and wall time. Jobs without a ``summary.json`` (failed or still running) come last.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from lit_ft.eval.task_metrics import logged_scores
from lit_ft.utils.plotting import pyplot

log = logging.getLogger(__name__)

REPORT_FILES = {"markdown": "sweep_report.md", "csv": "sweep_report.csv", "plot": "sweep_val_loss.png"}


@dataclass
class JobResult:
    """What one job of a sweep left in its folder."""

    job: str
    overrides: list[str]
    finished: bool
    best_val_loss: float | None = None
    final_val_loss: float | None = None
    task_losses: dict[str, float] = field(default_factory=dict)
    task_scores: dict[str, float] = field(default_factory=dict)  # val/<metric>/<task> after training
    forgetting: dict[str, float] = field(default_factory=dict)
    trainable_params: int | None = None
    seconds: float | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


def validation_checks(summary: dict[str, Any]) -> dict[int, dict[str, float]]:
    """``{step: {metric: value}}`` for every ``val/`` metric of a run's history (``history`` in its summary.json,
    written whatever the logger: CSV, W&B or none)."""
    checks: dict[int, dict[str, float]] = {}
    for name, points in (summary.get("history") or {}).items():
        if name.startswith("val/"):
            for step, value in points:
                if value is not None and math.isfinite(value):
                    checks.setdefault(int(step), {})[name] = value
    return checks


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}/").items()}
    return {prefix.rstrip("/"): value}


def load_job(job_dir: Path) -> JobResult:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = [str(o) for o in (yaml.safe_load(overrides_file.read_text()) or [])] if overrides_file.is_file() else []
    summary_file = job_dir / "summary.json"
    if not summary_file.is_file():
        return JobResult(job_dir.name, overrides, finished=False)
    summary = json.loads(summary_file.read_text())
    checks = validation_checks(summary)
    trained = {step: values for step, values in checks.items() if step > 0 and "val/loss" in values}
    best_step = min(trained, key=lambda step: trained[step]["val/loss"]) if trained else None
    best = summary.get("best_val_loss")
    if best is None:
        best = trained[best_step]["val/loss"] if best_step is not None else summary.get("val_loss_after")
    task_losses = {}
    if best_step is not None:
        task_losses = {
            k.removeprefix("val/loss/"): v for k, v in trained[best_step].items() if k.startswith("val/loss/")
        }
    forgetting = {
        k: v for k, v in _flatten(summary.get("forgetting") or {}).items() if "delta" in k and isinstance(v, float)
    }
    return JobResult(
        job=job_dir.name,
        overrides=overrides,
        finished=True,
        best_val_loss=best,
        final_val_loss=summary.get("val_loss_after"),
        task_losses=task_losses,
        task_scores=logged_scores((summary.get("task_scores") or {}).get("after") or {}),
        forgetting=forgetting,
        trainable_params=summary.get("trainable_params"),
        seconds=summary.get("seconds"),
        curve=sorted((step, values["val/loss"]) for step, values in checks.items() if "val/loss" in values),
    )


def collect(sweep_dir: Path) -> list[JobResult]:
    """Every job folder of the sweep (a folder with ``.hydra/`` or ``summary.json``), best validation loss first."""
    dirs = [
        p for p in sweep_dir.iterdir() if p.is_dir() and ((p / ".hydra").is_dir() or (p / "summary.json").is_file())
    ]
    jobs = [load_job(p) for p in sorted(dirs, key=lambda p: (len(p.name), p.name))]
    return sorted(jobs, key=lambda j: (j.best_val_loss is None, j.best_val_loss if j.best_val_loss is not None else 0))


def split_overrides(jobs: Sequence[JobResult]) -> tuple[list[str], dict[str, list[str]]]:
    """The overrides every job shares, and per job the ones that differ."""
    common = set.intersection(*(set(j.overrides) for j in jobs)) if jobs else set()
    return sorted(common), {j.job: [o for o in j.overrides if o not in common] for j in jobs}


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write the Markdown table, the CSV and the validation-loss plot into ``sweep_dir``; return their paths."""
    sweep_dir = Path(sweep_dir)
    jobs = collect(sweep_dir)
    common, varying = split_overrides(jobs)
    tasks = sorted({t for j in jobs for t in j.task_losses})
    scores = sorted({k for j in jobs for k in j.task_scores}, key=lambda k: (k.rsplit("/", 1)[1], k))  # by task
    forgetting = sorted({k for j in jobs for k in j.forgetting})
    header = [
        "rank",
        "job",
        "overrides",
        "best_val_loss",
        "final_val_loss",
        *(f"val/loss/{t}" for t in tasks),
        *scores,
        *(f"forgetting/{k}" for k in forgetting),
        "trainable_params",
        "seconds",
        "status",
    ]
    rows = []
    for rank, job in enumerate(jobs, start=1):
        rows.append(
            [
                rank if job.finished else "",
                job.job,
                " ".join(varying[job.job]),
                job.best_val_loss,
                job.final_val_loss,
                *(job.task_losses.get(t) for t in tasks),
                *(job.task_scores.get(k) for k in scores),
                *(job.forgetting.get(k) for k in forgetting),
                job.trainable_params,
                job.seconds,
                "ok" if job.finished else "no summary.json (failed or running)",
            ]
        )
    paths = {kind: sweep_dir / name for kind, name in REPORT_FILES.items()}
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    lines = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"{sum(j.finished for j in jobs)} of {len(jobs)} jobs finished; sorted by best validation loss (lower is better).",
        "",
        f"Common overrides: `{' '.join(common)}`" if common else "No override is common to all jobs.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if h not in ("job", "overrides", "status") else "---" for h in header) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(v) if i != 2 else f"`{v}`" for i, v in enumerate(row)) + " |" for row in rows]
    paths["markdown"].write_text("\n".join(lines) + "\n")
    if not plot_curves(jobs, varying, paths["plot"]):
        del paths["plot"]
    log.info("Sweep report: %s", paths["markdown"])
    return paths


def plot_curves(jobs: Sequence[JobResult], labels: dict[str, list[str]], path: Path) -> bool:
    """Validation loss per check, one line per job; ``False`` when no job logged any."""
    if not any(j.curve for j in jobs):
        return False
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    for job in jobs:
        if job.curve:
            steps, values = zip(*job.curve)
            axis.plot(steps, values, "o-", label=" ".join(labels[job.job]) or f"job {job.job}", markersize=3)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("val/loss (nats/token)")
    axis.set_title("validation loss per job")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


class SweepReport(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): write the sweep report when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        paths = write_report(sweep_dir)
        print(f"Sweep report: {paths['markdown']}\n{paths['markdown'].read_text()}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the report of a Hydra sweep folder.")
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding one sub-folder per job")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a folder")
    paths = write_report(args.sweep_dir)
    print(paths["markdown"].read_text())
    print("Written: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

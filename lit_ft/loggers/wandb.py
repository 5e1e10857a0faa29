"""Weights & Biases logging set up for fine-tuning dashboards.

Lightning's ``WandbLogger`` plus: offline mode chosen automatically when no API key is configured (with the
command that uploads the run later), group / name / tags from the experiment and the Hydra sweep, metric
definitions so the run summary holds the best validation loss and the final per-task losses, the run summary
and forgetting results written at the end, optionally the final model as an artifact, and the run finished
so the next job of a multirun starts its own.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from lit_ft.utils.lightning_compat import wandb_offline, wandb_run
from lit_ft.utils.metric_names import (
    FORGETTING,
    FORGETTING_TABLE,
    PER_TASK_TABLE,
    SAMPLES_BEFORE_AFTER_TABLE,
    STEP,
    TASK_SCORES_TABLE,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_PPL,
    final_metric,
)

log = logging.getLogger(__name__)

# metric (glob) -> what the run summary keeps
SUMMARIES = {
    VAL_LOSS: "min,last",
    VAL_PPL: "min,last",
    f"{VAL_LOSS}/*": "last,min",
    TRAIN_LOSS: "last",
    f"{TRAIN_LOSS}/*": "last",
    f"{FORGETTING}/*": "last",
}
# The task scores (val/<metric>/<task>, the task_scores callback) keep W&B's default run summary: the last value.


def wandb_api_key_configured() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file ``wandb login`` writes (``$NETRC`` or ``~/.netrc``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline_by_default() -> bool:
    """Offline unless ``WANDB_MODE=online`` or an API key is configured; ``WANDB_MODE=offline`` always."""
    mode = os.environ.get("WANDB_MODE", "")
    return mode in ("offline", "dryrun") or (mode != "online" and not wandb_api_key_configured())


def _hydra_job() -> tuple[str | None, str | None]:
    """``(sweep id, job label)`` inside a Hydra multirun, else ``(None, None)``. The label is the job's values of
    the swept keys (``peft.r=8``): the sweeper's ``params`` and the sweep overrides of the multirun command line
    (read back from ``multirun.yaml``, which Hydra writes at the start of the sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode
        from omegaconf import OmegaConf
    except ImportError:
        return None, None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None, None
    hydra = HydraConfig.get()
    swept = set((hydra.sweeper.get("params") or {}).keys())
    multirun = Path(hydra.sweep.dir) / "multirun.yaml"
    if multirun.is_file():
        command_line = list(OmegaConf.load(multirun).hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(command_line)
        swept |= {o.key_or_group for o in parsed if o.is_sweep_override()}
    values = [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
    return Path(hydra.sweep.dir).name, ",".join(values) or f"job{hydra.job.num}"


class WandbLogger(LightningWandbLogger):
    """W&B logger for lit-ft runs (``conf/logger/wandb.yaml``).

    Args:
        project: W&B project.
        group: runs grouped on the dashboard, by default the experiment; in a Hydra multirun the sweep id is
            appended (``lora_legal/2025-01-01_12-00-00``) and each job is named by its overrides.
        name: the run's name (the job's overrides in a multirun).
        tags: labels; a multirun adds ``sweep``.
        save_dir: where the run's local files go (``<save_dir>/wandb/``).
        offline: ``"auto"`` (offline unless an API key is configured or ``WANDB_MODE=online``), or a bool.
        log_artifact: upload the final model (the adapter for LoRA runs) as a ``model`` artifact; online only.
        dashboard: save lit-ft's workspace (:mod:`lit_ft.loggers.dashboard`) to the run's project when the run
            ends; online only (offline the log gives the command that saves it later). Needs ``wandb-workspaces``
            (``pip install 'lit-ft[dashboards]'``).
        **kwargs: passed to Lightning's ``WandbLogger`` / ``wandb.init`` (entity, notes, ...).
    """

    def __init__(
        self,
        project: str = "lit-ft",
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        save_dir: str = ".",
        offline: bool | Literal["auto"] = "auto",
        log_artifact: bool = False,
        dashboard: bool = False,
        **kwargs: Any,
    ) -> None:
        if dashboard and importlib.util.find_spec("wandb_workspaces") is None:
            raise ImportError(
                "logger.wandb.dashboard=true needs the wandb-workspaces package: pip install 'lit-ft[dashboards]'"
            )
        if offline == "auto":
            offline = wandb_offline_by_default()
            if offline and not os.environ.get("WANDB_MODE"):
                log.warning(
                    "W&B: no API key configured (WANDB_API_KEY or `wandb login`), logging offline under %s/wandb; "
                    "upload later with `wandb sync %s/wandb/offline-run-*`",
                    save_dir,
                    save_dir,
                )
        sweep, job = _hydra_job()
        tags = [*tags, *(["sweep"] if sweep else [])]
        group = f"{group}/{sweep}" if sweep and group else (group or sweep)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(
            name=job or name, save_dir=save_dir, offline=offline, project=project, group=group, tags=tags, **kwargs
        )
        self.log_artifact = log_artifact
        self.dashboard = dashboard

    @property
    def experiment(self):
        new = wandb_run(self) is None
        if new:
            import wandb

            if wandb.run is not None:  # left open by an earlier job of this process: never share a run
                wandb.run.finish()
        run = super().experiment
        if new:
            for metric, summary in SUMMARIES.items():
                run.define_metric(metric, step_metric=STEP, step_sync=True, summary=summary)
        return run

    def finish(self, summary: dict[str, Any]) -> None:
        """End of a run: its scalar results into the run summary (``final/...``), forgetting, per-task and
        before/after samples as tables, the model as an artifact (online, if ``log_artifact``), the workspace
        (online, if ``dashboard``), then finish the run."""
        run = self.experiment
        run.summary.update(final_scalars(summary))
        for key, (columns, rows) in result_tables(summary).items():
            self.log_table(key, columns=columns, data=rows)
        model_dir = summary.get("adapter_path") or summary.get("model_path")
        if self.log_artifact and model_dir:
            if wandb_offline(self):
                log.info("W&B: offline, so the model is not logged as an artifact")
            else:
                import wandb

                artifact = wandb.Artifact(re.sub(r"[^\w.-]", "-", f"{run.name}-model"), type="model")
                artifact.add_dir(model_dir)
                run.log_artifact(artifact)
        if self.dashboard:
            self._save_dashboard(run)
        run_dir = Path(run.dir).parent if getattr(run, "dir", None) else None
        run.finish()
        if wandb_offline(self) and run_dir is not None:
            log.warning("W&B run logged offline; upload it with: wandb sync %s", run_dir)

    def _save_dashboard(self, run: Any) -> None:
        from lit_ft.loggers.dashboard import offline_hint, save, workspace

        if wandb_offline(self):
            log.warning("W&B: offline, so the workspace is not saved; %s", offline_hint(run.entity, run.project))
            return
        log.info("W&B workspace saved: %s", save(workspace(run.entity, run.project)))


def final_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The run summary's numbers as ``final/<key>``, and those of its sections one level down as
    ``final/<section>/<key>`` (``final/early_stopping/best_step``, ``final/perf/mfu``)."""
    scalars = {}
    for key, value in summary.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, number in items:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                scalars[final_metric(key if inner is None else f"{key}/{inner}")] = number
    return scalars


def result_tables(summary: dict[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """``{key: (columns, rows)}`` for the run's result tables: ``forgetting_results`` (metric, baseline, final,
    delta from the forgetting check's summary), ``per_task`` (one row per task type from the per-task callback's),
    ``samples_before_after`` (prompt, reference and the answers before and after training, from the samples') and
    ``task_scores`` (task type, metric, before, after, from the task-scores callback's)."""
    tables = {}
    forgetting = summary.get("forgetting") or {}
    final = forgetting.get("final") or {}
    if final:
        baseline, delta = forgetting.get("baseline") or {}, forgetting.get("delta") or {}
        rows = [[metric, baseline.get(metric), value, delta.get(metric)] for metric, value in final.items()]
        tables[FORGETTING_TABLE] = (["metric", "baseline", "final", "delta"], rows)
    per_task = summary.get("per_task") or {}
    if per_task:
        columns = sorted({key for values in per_task.values() for key in values})
        tables[PER_TASK_TABLE] = (
            ["task_type", *columns],
            [[t, *(v.get(c) for c in columns)] for t, v in per_task.items()],
        )
    samples = summary.get("samples") or []
    if samples:
        columns = ["prompt", "reference", "before", "after"]
        tables[SAMPLES_BEFORE_AFTER_TABLE] = (columns, [[sample.get(c) for c in columns] for sample in samples])
    scores = summary.get("task_scores") or {}
    if scores.get("after"):
        before = scores.get("before") or {}
        rows = [
            [task, metric, (before.get(task) or {}).get(metric), value]
            for task, values in scores["after"].items()
            for metric, value in values.items()
        ]
        tables[TASK_SCORES_TABLE] = (["task_type", "metric", "before", "after"], rows)
    return tables

"""Task scores during training: the task metrics of ``eval.py`` on held-out prompts, logged as validation metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L

from lit_ft.callbacks.steps import weights_step
from lit_ft.data.prompts import Prompt, prompts_from_records
from lit_ft.eval.generation import GENERATION_BATCH_SIZE
from lit_ft.eval.task_metrics import TaskMetric, logged_scores
from lit_ft.eval.task_scores import generate_and_score
from lit_ft.utils.protocols import TaskData

log = logging.getLogger(__name__)


class TaskScores(L.Callback):
    """Score the model's answers to the validation split's prompts with the task metrics of ``eval.py``.

    When: at every ``trainer.validate`` (``lit_ft.fit`` runs one before training and one after it, on the weights it
    exports, after early stopping restored the best ones), and, with ``every_validation``, at every validation
    during ``fit``. What: greedy answers to up to ``max_examples`` prompts of the validation split (taken in turn
    from each task type; each row's held-out answer is the reference), ``batch_size`` prompts per batch, at most
    ``max_new_tokens`` tokens each, scored by ``metrics``. The function is the one ``eval.py`` uses
    (:func:`~lit_ft.eval.task_scores.generate_and_score`), so the numbers equal ``eval.py``'s for the same weights
    with ``generation.max_examples``, ``max_new_tokens`` and ``batch_size`` set alike.

    The scores are logged in ``on_validation_epoch_end`` as ``val/<metric>/<task>`` (``val/accuracy/classify``,
    ``val/rouge_l/summarize``), with the validation loss: they reach the loggers (CSV, W&B), the metric history
    (``val_before``/``val_after`` in ``summary.json``, the end-of-run table) and the callbacks that read metrics in
    ``on_validation_end`` (early stopping, checkpointing), whatever the order of the callbacks. To monitor a task
    score there, set ``every_validation``: otherwise validations during ``fit`` log none.

    Each check's answers go to ``<output_dir>/task_scores.jsonl`` (with the step of the weights, rank 0), its scores
    and cost (seconds, generated tokens) to the log, and all checks to :meth:`summary`. In a distributed run every
    rank answers every prompt, in step with the others (``synced_gpus``), so all ranks log the same values.

    Args:
        metrics: task type (or ``default``) -> task metric (``conf/task_metrics/``, shared with ``eval.py``).
        max_examples: prompts to answer (``None``: the whole validation split).
        max_new_tokens: answer length cap; answers end earlier at the end of their turn.
        batch_size: prompts generated together (left-padded).
        every_validation: also score at each validation during training.
        output_dir: where ``task_scores.jsonl`` goes (default: the trainer's ``default_root_dir``).
    """

    def __init__(
        self,
        metrics: Mapping[str, TaskMetric],
        max_examples: int | None = None,
        max_new_tokens: int = 128,
        batch_size: int = GENERATION_BATCH_SIZE,
        every_validation: bool = False,
        output_dir: str | None = None,
    ) -> None:
        if not metrics:
            raise ValueError(
                "TaskScores needs task metrics: metrics={task_type or 'default': metric} (conf/task_metrics/)"
            )
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"TaskScores: max_examples must be at least 1 or null (all), got {max_examples}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"TaskScores: max_new_tokens and batch_size must be at least 1, got {max_new_tokens}, {batch_size}"
            )
        for task, metric in metrics.items():
            if not (callable(getattr(metric, "example", None)) and callable(getattr(metric, "aggregate", None))):
                raise ValueError(
                    f"TaskScores: metrics[{task!r}] is a {type(metric).__name__}, not a task metric (an object with "
                    "example() and aggregate(), such as lit_ft.eval.TextOverlap)"
                )
        self.metrics = dict(metrics)
        self.max_examples, self.max_new_tokens, self.batch_size = max_examples, max_new_tokens, batch_size
        self.every_validation = every_validation
        self.output_dir = Path(output_dir) if output_dir else None
        self.prompts: list[Prompt] = []
        self.checks: list[dict[str, Any]] = []  # {"step", "seconds", "tokens"}: the cost of each check
        self.before: dict[str, dict[str, float]] | None = None  # per task type, of a check at step 0
        self.after: dict[str, dict[str, float]] | None = None  # of the last check

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.prompts:
            return
        datamodule: TaskData = trainer.datamodule
        self.prompts = prompts_from_records(datamodule.val_records(), self.max_examples)
        if not any(p.get("reference") is not None for p in self.prompts):
            raise ValueError(
                "TaskScores: the validation split has no prompt with a reference answer to score (chat rows ending "
                "in an assistant turn, or prompt/completion rows); set data.val_files, or remove callbacks.task_scores"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.state.fn == "fit" and not self.every_validation):
            return
        datamodule: TaskData = trainer.datamodule
        scored = generate_and_score(
            pl_module.model,
            datamodule.tokenizer,
            self.prompts,
            self.metrics,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            synced_gpus=trainer.world_size > 1,
            device=pl_module.device,
        )
        scores = logged_scores(scored.per_task)
        for name, value in scores.items():
            pl_module.log(name, value, on_step=False, on_epoch=True)
        step = weights_step(trainer)
        self.checks.append({"step": step, "seconds": round(scored.seconds, 1), "tokens": scored.tokens})
        if step == 0 and self.before is None:
            self.before = scored.per_task
        self.after = scored.per_task
        if not trainer.is_global_zero:
            return
        output_dir = self.output_dir or Path(trainer.default_root_dir)
        with (output_dir / "task_scores.jsonl").open("a") as handle:
            handle.writelines(json.dumps({"step": step, **row}) + "\n" for row in scored.rows)
        shown = ", ".join(f"{name.removeprefix('val/')}={value:.4f}" for name, value in scores.items())
        log.info(
            "Task scores (step %d): %s; %d prompts, %d tokens generated in %.1f s",
            step,
            shown,
            len(self.prompts),
            scored.tokens,
            scored.seconds,
        )

    def summary(self) -> dict[str, Any]:
        """``task_scores``: per task type, its scores ``before`` training (a check at step 0) and ``after`` (the last
        check: the weights ``lit_ft.fit`` exports), the cost of each check and in all."""
        return {
            "task_scores": {
                "prompts": len(self.prompts),
                "max_new_tokens": self.max_new_tokens,
                "before": self.before,
                "after": self.after,
                "checks": self.checks,
                "seconds": round(sum(c["seconds"] for c in self.checks), 1),
                "tokens": sum(c["tokens"] for c in self.checks),
            }
        }

    def state_dict(self) -> dict[str, Any]:
        return {"checks": self.checks, "before": self.before, "after": self.after}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.checks = list(state_dict.get("checks", []))
        self.before, self.after = state_dict.get("before"), state_dict.get("after")

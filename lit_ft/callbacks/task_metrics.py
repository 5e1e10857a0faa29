"""Loss (and any per-example metric) split by task type, from the step outputs, synced across ranks."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lit_ft.callbacks.steps import StepTracker
from lit_ft.data.batch import example_task_ids
from lit_ft.eval.grouped_mean import GroupedMean
from lit_ft.utils.metric_names import STAGES, TASK_COUNTS, TASK_LOSS, split_task_metric, task_metric
from lit_ft.utils.protocols import TaskData, TrainedModule

Update = tuple[str, torch.Tensor, torch.Tensor]  # metric name, values [N], task ids [N]
TOKENS, EXAMPLES = TASK_COUNTS


class TaskMetrics(L.Callback):
    """Log the loss per task type, token-weighted, with token and example counts.

    Reads what ``training_step``/``validation_step`` return (no second forward):

    - token losses: ``per_token_loss``, ``loss_mask``, ``task_ids`` [B, T-1] give ``{stage}/loss/<task>`` (mean over
      the loss tokens of that task) and ``{stage}/tokens/<task>`` (their number);
    - per-example metrics (preference modules): ``example_metrics`` ``{name: [E]}`` with ``example_task_ids`` [E]
      give ``{stage}/<name>/<task>`` (mean over the examples of that task);
    - ``{stage}/examples/<task>``: examples seen (from ``example_task_ids`` when returned, else from the batch:
      one per row of a padded batch, one per ``position_ids`` run of a packed batch).

    Training metrics cover a logging window of ``trainer.log_every_n_steps`` optimizer steps (every micro-batch
    of those steps, on every rank; not the steps the module records as dropped, ``step_dropped``, such as those a
    :class:`~lit_ft.callbacks.DivergenceGuard` skipped); validation metrics cover the whole validation epoch. Values
    are summed over ranks by torchmetrics before the division, so a DDP run logs what one process would over the
    same data.

    :meth:`summary` reports the per-task validation metrics of the first validation before training
    (``before``; ``lit_ft.fit`` runs one) and of the last validation (``after``).

    Args:
        task_names: id -> name; by default ``trainer.datamodule.task_names``.
    """

    def __init__(self, task_names: list[str] | None = None) -> None:
        self.task_names = list(task_names) if task_names else []
        self._metrics: dict[str, dict[str, GroupedMean]] = {stage: {} for stage in STAGES}
        self._device = torch.device("cpu")
        self._steps = StepTracker()
        self._step_updates: list[Update] = []  # of the optimizer step under way
        self._fit_started = False
        self.before: dict[str, float] | None = None
        self.after: dict[str, float] | None = None

    # --- state -----------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        names = trainer.datamodule.task_names if isinstance(trainer.datamodule, TaskData) else None
        if names and list(names) != self.task_names:
            self.task_names = list(names)
            self._metrics = {s: {} for s in STAGES}
        if not self.task_names:
            raise ValueError("TaskMetrics needs task names: a datamodule with `task_names`, or `task_names=[...]`")
        self._device = trainer.strategy.root_device

    def _metric(self, stage: str, name: str) -> GroupedMean:
        if name not in self._metrics[stage]:
            self._metrics[stage][name] = GroupedMean(len(self.task_names)).to(self._device)
        return self._metrics[stage][name]

    @staticmethod
    def _updates(outputs: Any, batch: dict[str, torch.Tensor]) -> list[Update]:
        """``(metric name, values, task ids)`` of a step's outputs."""
        if not isinstance(outputs, dict):
            return []
        updates = []
        if "per_token_loss" in outputs:
            mask = outputs["loss_mask"].bool()
            updates.append((TASK_LOSS, outputs["per_token_loss"].detach()[mask], outputs["task_ids"][mask]))
        examples = outputs.get("example_task_ids")
        if examples is None:
            examples = example_task_ids(batch)
        updates.append((EXAMPLES, torch.ones_like(examples, dtype=torch.float64), examples))
        for name, values in outputs.get("example_metrics", {}).items():
            updates.append((name, values.detach(), outputs["example_task_ids"]))
        return updates

    def _update(self, stage: str, updates: list[Update]) -> None:
        for name, values, task_ids in updates:
            self._metric(stage, name).update(values, task_ids)

    def compute(self, stage: str) -> dict[str, float]:
        """The stage's metrics so far, synced over ranks (a collective: call it on every rank)."""
        values: dict[str, float] = {}
        for name, metric in self._metrics[stage].items():
            # atleast_1d: torchmetrics squeezes one-element results, so one task type would give 0-dim tensors
            mean, count = (torch.atleast_1d(t) for t in metric.compute())
            for task_id, task in enumerate(self.task_names):
                if count[task_id] == 0:
                    continue
                if name == EXAMPLES:
                    values[task_metric(stage, EXAMPLES, task)] = float(count[task_id])
                    continue
                values[task_metric(stage, name, task)] = float(mean[task_id])
                if name == TASK_LOSS:
                    values[task_metric(stage, TOKENS, task)] = float(count[task_id])
        return values

    def _reset(self, stage: str) -> None:
        for metric in self._metrics[stage].values():
            metric.reset()

    # --- training: a window of log_every_n_steps optimizer steps -------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_started = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)
        self._reset("train")
        self._step_updates = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # The micro-batches of an optimizer step count once the step is taken: not those of a step skipped for a
        # non-finite loss or gradient (whose NaN would spoil the window's means; its tokens were not trained on).
        self._step_updates += self._updates(outputs, batch)
        stepped = self._steps.stepped(trainer)
        if stepped:
            if not (isinstance(pl_module, TrainedModule) and pl_module.step_dropped):
                self._update("train", self._step_updates)
            self._step_updates = []
        # The window closes after an optimizer step, when Lightning also sends logged values to the loggers.
        if stepped and self._steps.closes_window(trainer):
            for name, value in self.compute("train").items():
                pl_module.log(name, value, on_step=True, on_epoch=False)
            self._reset("train")

    # --- validation: the whole epoch ---------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset("val")  # under the evaluation loop's grad mode, like the updates that follow

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._update("val", self._updates(outputs, batch))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = self.compute("val")
        for name, value in values.items():
            pl_module.log(name, value, on_step=False, on_epoch=True)
        if not self._fit_started and self.before is None:
            self.before = values
        self.after = values

    # --- report ------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """``per_task``: for each task type, its validation metrics ``before``/``after`` training and its counts."""
        per_task: dict[str, dict[str, float]] = {}
        for when, values in (("before", self.before), ("after", self.after)):
            for key, value in (values or {}).items():
                name, task = split_task_metric(key)
                if name not in TASK_COUNTS:
                    per_task.setdefault(task, {})[f"val_{name}_{when}"] = value
        for key, value in (self.after or self.before or {}).items():
            name, task = split_task_metric(key)
            if name in TASK_COUNTS:
                per_task.setdefault(task, {})[f"val_{name}"] = value
        return {"per_task": per_task}

    def state_dict(self) -> dict[str, Any]:
        return {"before": self.before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict.get("before")

"""Record the loss curves of a run for its end-of-run plot and summary."""

from __future__ import annotations

import lightning as L
import torch

from lit_ft.callbacks.steps import weights_step
from lit_ft.utils.metric_names import TRAIN_LOSS, VAL_PREFIX


def _scalar(value: torch.Tensor | float) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class MetricHistory(L.Callback):
    """Keep ``(optimizer step, value)`` pairs of ``train/loss`` and every ``val/`` metric, on rank 0's view.

    Reads ``trainer.callback_metrics`` (what the module logged), so it needs no logger and no file.
    """

    def __init__(self) -> None:
        self.train: list[tuple[int, float]] = []
        self.val: dict[str, list[tuple[int, float]]] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get(TRAIN_LOSS)
        if loss is not None and (not self.train or self.train[-1][0] != trainer.global_step):
            self.train.append((trainer.global_step, _scalar(loss)))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record at the step of the weights validated: after early stopping restored the best check's weights,
        that check's step, whose entry the new value replaces wherever it is in the curve (the same weights, not
        a new point)."""
        if trainer.sanity_checking:
            return
        step = weights_step(trainer)
        for name, value in trainer.callback_metrics.items():
            if name.startswith(VAL_PREFIX) and value.numel() == 1:
                points = [point for point in self.val.get(name, []) if point[0] != step]
                self.val[name] = sorted([*points, (step, _scalar(value))])

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Every recorded curve by metric name: ``train/loss`` and each ``val/`` metric."""
        return {TRAIN_LOSS: self.train, **self.val}

    def before_training(self, name: str) -> float | None:
        """The value of validation metric ``name`` recorded at step 0 (a validation before training), if any."""
        first = self.val.get(name, [])[:1]
        return first[0][1] if first and first[0][0] == 0 else None

    def state_dict(self) -> dict:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict) -> None:
        self.train, self.val = list(state_dict["train"]), dict(state_dict["val"])

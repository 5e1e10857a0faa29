"""A rich progress bar that shows the training loss, the validation loss and tokens/s."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from lit_ft.utils.metric_names import TOKENS_PER_S, TRAIN_LOSS, VAL_LOSS

# metric logged -> label in the bar, and its format
SHOWN = {TRAIN_LOSS: ("loss", "{:.4f}"), VAL_LOSS: ("val_loss", "{:.4f}"), TOKENS_PER_S: ("tok/s", "{:.0f}")}


class ProgressBar(RichProgressBar):
    """Lightning's :class:`RichProgressBar` showing ``loss``, ``val_loss`` and ``tok/s`` (from
    :class:`~lit_ft.callbacks.Throughput`) rather than every progress-bar metric and the logger version."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, str]:
        shown = {}
        for name, (label, form) in SHOWN.items():
            value = trainer.callback_metrics.get(name)
            if value is not None:
                shown[label] = form.format(float(value))
        return shown

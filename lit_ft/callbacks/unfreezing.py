"""Gradual unfreezing: train the top of the model first and let training reach one layer deeper at a time."""

from __future__ import annotations

import logging

import lightning as L
from torch import nn

from lit_ft.models.layers import parameter_depths

log = logging.getLogger(__name__)


class GradualUnfreezing(L.Callback):
    """Gradual unfreezing (ULMFiT, Howard & Ruder, 2018).

    The parameters that are trainable when fitting starts (all of them, or the adapters of a LoRA run) are
    grouped by depth (:func:`lit_ft.models.layers.parameter_depths`: head and final norm on top, then the
    decoder layers top-down, the embeddings last; with tied embeddings the shared matrix counts as embeddings).
    Training starts with the ``initial`` top levels; one more level is unfrozen every ``every_n_epochs`` epochs
    or, if set, every ``every_n_steps`` optimizer steps. When fitting ends every level is trainable again.

    The optimizer holds all the parameters from the start; a frozen one has no gradient, so AdamW leaves it
    (and its weight decay) alone. The level follows from the epoch / step, so a resumed run continues it.
    Under DDP, set ``strategy.find_unused_parameters=true``.
    """

    def __init__(self, initial: int = 2, every_n_epochs: int = 1, every_n_steps: int | None = None) -> None:
        if initial < 1:
            raise ValueError("initial must be >= 1 (at least the top level trains)")
        self.initial, self.every_n_epochs, self.every_n_steps = initial, every_n_epochs, every_n_steps
        self.levels: list[list[nn.Parameter]] = []
        self.unfrozen = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        depths, _ = parameter_depths(pl_module)
        by_depth: dict[int, list[nn.Parameter]] = {}
        for parameter in pl_module.parameters():
            if parameter.requires_grad:
                by_depth.setdefault(depths[id(parameter)], []).append(parameter)
        self.levels = [by_depth[d] for d in sorted(by_depth, reverse=True)]
        self.unfrozen = 0
        self.update(trainer)

    def levels_at(self, epoch: int, step: int) -> int:
        """How many levels (from the top) train at this epoch and optimizer step."""
        passed = step // self.every_n_steps if self.every_n_steps else epoch // self.every_n_epochs
        return min(len(self.levels), self.initial + passed)

    def update(self, trainer: L.Trainer) -> None:
        count = self.levels_at(trainer.current_epoch, trainer.global_step)
        if count == self.unfrozen:
            return
        for index, params in enumerate(self.levels):
            for parameter in params:
                parameter.requires_grad_(index < count)
        self.unfrozen = count
        trainable = sum(p.numel() for params in self.levels[:count] for p in params)
        log.info(
            "Gradual unfreezing: %d of %d levels train (%s parameters) at epoch %d, step %d",
            count,
            len(self.levels),
            f"{trainable:,}",
            trainer.current_epoch,
            trainer.global_step,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.update(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.every_n_steps:
            self.update(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for params in self.levels:
            for parameter in params:
                parameter.requires_grad_(True)
        self.unfrozen = len(self.levels)

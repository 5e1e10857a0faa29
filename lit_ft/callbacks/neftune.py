"""NEFTune: noise on the input embeddings while training."""

from __future__ import annotations

import logging

import lightning as L
from transformers.integrations.neftune import activate_neftune, deactivate_neftune

log = logging.getLogger(__name__)


class NEFTune(L.Callback):
    """NEFTune (Jain et al., 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning").

    While the model trains, the input embeddings [B, L, d] get uniform noise in
    ``[-alpha / sqrt(L * d), alpha / sqrt(L * d)]``. Reuses transformers' forward hook (the one its Trainer
    and TRL use), which adds noise only when the embedding module is in training mode: validation, the
    forgetting check and generation see clean embeddings. The hook is removed when fitting ends.

    Args:
        noise_alpha: the paper's alpha (5 in its experiments; 5-15 is the usual range).
    """

    def __init__(self, noise_alpha: float = 5.0) -> None:
        self.noise_alpha = noise_alpha
        self._handle = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._handle = activate_neftune(pl_module.model, self.noise_alpha)
        log.info("NEFTune: embedding noise alpha=%g while training", self.noise_alpha)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._handle is not None and pl_module.model is not None:
            deactivate_neftune(pl_module.model, self._handle)
        self._handle = None

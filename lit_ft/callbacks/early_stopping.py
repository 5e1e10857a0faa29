"""Early stopping that, when training ends, puts back the weights of the best validation check."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from lit_ft.utils.distributed import is_sharded, load_trainable_state, own_shards, trainable_state, whole_tensors
from lit_ft.utils.lightning_compat import EarlyStoppingHooks

log = logging.getLogger(__name__)


class EarlyStoppingWithRestore(EarlyStoppingHooks):
    """Lightning's :class:`EarlyStopping` (``monitor``, ``mode``, ``patience``, ``min_delta``, ...) that also
    restores the best weights.

    Lightning's callback only stops; the model then holds the weights of the last step, which are by construction
    worse than the best check. Here, at every check where the monitored value improves, the trainable parameters
    are copied to CPU memory (for LoRA only the adapters, a few MB; for full fine-tuning one copy of the model),
    and when training ends, early or not, they are loaded back and their step is recorded on the module
    (``restored_step``). The validation that ``lit_ft.fit`` runs after ``fit``, the final samples and forgetting
    scores (``on_fit_end``) and the exported model all see the best weights, and label them with that step
    (:func:`~lit_ft.callbacks.steps.weights_step`).

    Frozen weights and buffers are not copied: they do not change during training. Under FSDP2 each rank copies
    its own shard of the sharded weights; checkpoints (written by rank 0) get them gathered into whole tensors,
    and a resumed run cuts them back into shards when training starts.

    Args:
        restore_best: load the best weights back when training ends.
        best_in_checkpoint: keep the best weights in the checkpoint's callback state, so a resumed run can
            still restore them (adds the trainable weights to each checkpoint once more).
        (others: see :class:`lightning.pytorch.callbacks.EarlyStopping`)
    """

    def __init__(self, *args: Any, restore_best: bool = True, best_in_checkpoint: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.restore_best, self.best_in_checkpoint = restore_best, best_in_checkpoint
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None
        self.stopped_step: int | None = None
        self.stop_reason: str | None = None
        self.restored = False

    def on_stop_decision(self, should_stop: bool, reason: str | None) -> None:
        if should_stop and self.stop_reason is None:
            self.stop_reason = reason

    def on_check_end(self, trainer: L.Trainer, improved: bool) -> None:
        if improved:
            self.best_state = trainable_state(trainer.lightning_module) if self.restore_best else None
            self.best_step = trainer.global_step
        if self.stop_reason is not None and self.stopped_step is None:
            self.stopped_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_state is not None:  # whole tensors when read from the checkpoint of a sharded run
            self.best_state = own_shards(pl_module, self.best_state)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("callbacks", {}).get(self.state_key, {})
        if "best_state" in state and is_sharded(pl_module):
            state["best_state"] = whole_tensors(pl_module, state["best_state"])  # rank 0 writes the callback state

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.restore_best:
            return
        if self.best_state is None:
            log.warning("EarlyStoppingWithRestore: no best weights recorded (no check of %s ran)", self.monitor)
            return
        load_trainable_state(pl_module, self.best_state)
        self.restored = True
        pl_module.restored_step = self.best_step  # what checks after training label their results with
        log.info(
            "Restored the weights of step %d (best %s = %.4f)", self.best_step, self.monitor, float(self.best_score)
        )

    def summary(self) -> dict[str, Any]:
        return {
            "early_stopping": {
                "monitor": self.monitor,
                "best_score": float(self.best_score) if torch.isfinite(self.best_score) else None,
                "best_step": self.best_step,
                "stopped_early": self.stopped_step is not None,
                "stopped_step": self.stopped_step,
                "stop_reason": self.stop_reason,
                "restored_best": self.restored,
            }
        }

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "best_step": self.best_step, "stopped_step": self.stopped_step}
        state["stop_reason"] = self.stop_reason
        if self.best_in_checkpoint and self.best_state is not None:
            state["best_state"] = self.best_state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_step, self.stopped_step = state_dict.get("best_step"), state_dict.get("stopped_step")
        self.stop_reason = state_dict.get("stop_reason")
        self.best_state = state_dict.get("best_state")

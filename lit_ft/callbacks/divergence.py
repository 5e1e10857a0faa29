"""Skip optimizer steps with a non-finite loss or gradient; stop a run that keeps producing them."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from lit_ft.utils.distributed import local_part

log = logging.getLogger(__name__)


class DivergenceError(FloatingPointError):
    """Training produced non-finite losses or gradients for too many optimizer steps in a row."""


class DivergenceGuard(L.Callback):
    """Skip every optimizer step whose loss (any micro-batch of the accumulation window) or gradient holds a NaN
    or an infinity, count it, and stop the run after ``max_consecutive`` skipped steps in a row.

    A skipped step leaves the weights and the optimizer state untouched: the gradients are dropped (set to
    ``None``), and torch optimizers pass over parameters without a gradient (no moment update, no weight decay,
    no step count). The trainer still counts the step (global step, LR schedule), so the run ends where planned.
    The decision is taken on all ranks together, and recorded on the module as ``step_dropped = True`` (a lit-ft
    module then does not count the step's tokens as trained, nor ``TaskMetrics`` its micro-batches; both read the
    flag after the step, so the order of the hooks does not matter). Under fp16 mixed precision the GradScaler already skips steps
    whose gradients overflow (and lowers its scale), so the guard then counts only non-finite losses and leaves
    the gradients to the scaler.

    ``summary()`` reports ``skipped_steps`` (how many) and ``skipped_step_numbers`` (the optimizer steps, counted
    from 1 like ``trainer.global_step`` after the step). The counts are kept in checkpoints.

    Args:
        max_consecutive: stop with :class:`DivergenceError` after this many skipped steps in a row.
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped_step_numbers: list[int] = []
        self.consecutive = 0
        self._bad_loss: torch.Tensor | None = None  # a device flag: no host sync per micro-batch

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        bad_loss, self._bad_loss = self._bad_loss, None
        checks = [] if bad_loss is None else [bad_loss]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            checks += [~torch.isfinite(local_part(g)).all() for g in grads]  # FSDP2: DTensors
        # one device (gradients of CPU-offloaded shards live on the CPU, the loss on the GPU), one sync
        bad = bool(torch.stack([check.to(checks[0].device) for check in checks]).any()) if checks else False
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            self.consecutive = 0
            return
        if scaler is None:
            optimizer.zero_grad(set_to_none=True)
        pl_module.step_dropped = True
        step = trainer.global_step + 1
        self.skipped_step_numbers.append(step)
        self.consecutive += 1
        log.warning(
            "Step %d: non-finite loss or gradient, update skipped (%d in a row; the run stops at %d).",
            step,
            self.consecutive,
            self.max_consecutive,
        )
        if self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1
            raise DivergenceError(
                f"Training diverged: the loss or gradients were NaN/inf for {self.consecutive} optimizer steps in a "
                f"row (steps {first}-{step}; {len(self.skipped_step_numbers)} skipped in all), so the run stops. "
                "The checkpoints hold the last state before it. Lower the learning rate (module.optimizer.lr) or "
                "lengthen the warmup, look at the training data around these steps, prefer bf16 to fp16, or raise "
                "callbacks.divergence_guard.max_consecutive to tolerate longer streaks."
            )

    def summary(self) -> dict[str, Any]:
        return {
            "skipped_steps": len(self.skipped_step_numbers),
            "skipped_step_numbers": list(self.skipped_step_numbers),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_step_numbers": list(self.skipped_step_numbers), "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_step_numbers = list(state_dict["skipped_step_numbers"])
        self.consecutive = int(state_dict["consecutive"])

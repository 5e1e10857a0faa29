"""Faults and probes that tests put into runs through their config (``_target_: tests.support.faults...``)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy

from lit_ft.modules import SFTModule
from lit_ft.strategies import AtomicCheckpointIO


class StepLog(L.Callback):
    """Append ``<optimizer step> <train/loss as float.hex>`` to a file after every optimizer step, flushed at
    once, so a run killed with SIGKILL leaves the losses of every step it finished."""

    def __init__(self, path: str) -> None:
        self.path, self.last = Path(path), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and trainer.global_step > self.last:
            self.last = trainer.global_step
            with self.path.open("a") as handle:
                handle.write(f"{trainer.global_step} {float(loss).hex()}\n")


def read_step_log(path: Path) -> dict[int, str]:
    """Step -> loss (hex); a resumed run's later line for a step replaces the earlier one."""
    return {int(step): loss for step, loss in (line.split() for line in path.read_text().splitlines())}


def hang(marker: str) -> None:
    """Tell the test (through ``marker``) that this process may be killed now, and wait for it."""
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(1)


class HangAfterStep(L.Callback):
    """Block after optimizer step ``step`` (before the checkpoint callbacks of that step run)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            hang(self.marker)


class HangingCheckpointIO(AtomicCheckpointIO):
    """:class:`AtomicCheckpointIO` that, when writing the checkpoint of optimizer step ``step``, writes half of it
    and blocks: the process is then killed in the middle of a checkpoint save."""

    def __init__(self, step: int, marker: str) -> None:
        super().__init__()
        self.step, self.marker = step, marker

    def write(self, checkpoint: dict[str, Any], handle: IO[bytes]) -> None:
        if checkpoint["global_step"] != self.step:
            return super().write(checkpoint, handle)
        buffer = io.BytesIO()
        super().write(checkpoint, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        hang(self.marker)


class RestoreAfterSetup(SingleDeviceStrategy):
    """A single-device strategy that restores checkpoints after setup, as FSDP, DeepSpeed and ModelParallel do: by
    then the training loader has been built and started (``configure_optimizers`` asks for the step count)."""

    def __init__(self) -> None:
        super().__init__(device="cpu")

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True


class InjectedFaults(SFTModule):
    """SFT with a NaN loss at the optimizer steps ``nan_steps`` and an infinite gradient at ``inf_grad_steps``."""

    def __init__(self, *args, nan_steps: list[int] = (), inf_grad_steps: list[int] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nan_steps, self.inf_grad_steps = list(nan_steps), list(inf_grad_steps)

    def token_losses(self, batch):
        out = super().token_losses(batch)
        if self.trainer.global_step + 1 in self.nan_steps:
            out["per_token_loss"] = out["per_token_loss"] * float("nan")
        return out

    def on_after_backward(self) -> None:
        if self.trainer.global_step + 1 in self.inf_grad_steps:  # the loss is finite, one gradient entry is not
            self.model.get_output_embeddings().weight.grad[0, 0] = float("inf")


class Trace(L.Callback):
    """After every optimizer step: a weight, the trained-token count and the optimizer's own step count; and
    the ``train/`` metrics logged so far (last values)."""

    steps: dict[int, tuple[torch.Tensor, int, float]] = {}
    metrics: dict[int, dict[str, float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weight = pl_module.model.get_output_embeddings().weight
        adam_steps = float(trainer.optimizers[0].state[weight]["step"]) if weight in trainer.optimizers[0].state else 0
        Trace.steps[trainer.global_step] = (weight.detach().clone(), pl_module.train_loss_tokens, adam_steps)
        metrics = trainer.callback_metrics.items()
        Trace.metrics[trainer.global_step] = {k: float(v) for k, v in metrics if k.startswith("train/")}


def refuse_to_load(**kwargs) -> None:
    """A model factory for runs that must stop before any model is built."""
    raise AssertionError("the model was built before the data was checked")

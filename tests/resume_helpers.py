"""Pieces the kill-and-resume tests put into a run through its config (``_target_: tests.resume_helpers...``)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import IO, Any

import lightning as L
from lightning.pytorch.strategies import SingleDeviceStrategy

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

"""Checkpoint files that are never seen half-written."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_ft.utils.io import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save each checkpoint to a temporary file beside its target, fsync it, then rename it over the target.

    A process killed at any moment (preemption, OOM killer, SIGKILL) leaves the checkpoint path holding either the
    previous complete file or the new complete file, so ``ckpt_path=last`` always resumes from a readable state.
    Lightning's ``TorchCheckpointIO`` serialises into memory and moves a file from the system temp folder; when
    that folder is on another filesystem than the checkpoints (usual on clusters) the move is a copy into the
    final path, which a kill can cut short, and nothing is fsynced. Remote paths (``s3://`` ...) keep Lightning's
    transactional upload. Loading is unchanged (``weights_only`` as the trainer asks).

    Use: ``Trainer(plugins=[AtomicCheckpointIO()])`` (``conf/trainer/default.yaml`` does, and so ``trainer=cpu`` and
    ``trainer=gpu``).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(Path(path)) as handle:
            self.write(checkpoint, handle)

    def write(self, checkpoint: dict[str, Any], handle: IO[bytes]) -> None:
        """Serialise ``checkpoint`` into the open temporary file."""
        torch.save(checkpoint, handle)

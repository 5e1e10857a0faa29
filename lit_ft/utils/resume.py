"""Which checkpoint a run continues from: ``ckpt_path=last``, an explicit path, or a requeued SLURM job."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def requeued_on_slurm() -> bool:
    """True in a SLURM job that the scheduler restarted (preemption, ``scontrol requeue``, node failure)."""
    return SLURMEnvironment.detect() and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0


def resume_checkpoint(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint file to resume from, or ``None`` to start from scratch.

    - an explicit path: that file, which must exist;
    - ``last``: ``<output_dir>/checkpoints/last.ckpt`` (rewritten every ``every_n_train_steps`` by the
      ``last_checkpoint`` callback), or ``None`` with a warning when the run has not saved one yet, so
      ``ckpt_path=last`` can be set from the first submission of a job;
    - ``None`` in a requeued SLURM job: as ``last``. Otherwise ``None``.

    Without ``last.ckpt``, the newest ``hpc_ckpt_*.ckpt`` Lightning wrote into ``output_dir`` on a SLURM requeue
    signal is used instead.
    """
    output_dir = Path(output_dir)
    if ckpt_path not in (None, "last"):
        if not Path(ckpt_path).exists():  # a file, or a folder (sharded checkpoints: FSDP2, DeepSpeed)
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist (use ckpt_path=last to resume this run)")
        return str(ckpt_path)
    if ckpt_path is None and not requeued_on_slurm():
        return None
    last = output_dir / LAST_CHECKPOINT
    if last.exists():
        return str(last)
    hpc = sorted(output_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if hpc:
        return str(hpc[-1])
    log.warning("No checkpoint at %s yet: training starts from scratch.", last)
    return None

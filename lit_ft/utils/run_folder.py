"""A run folder belongs to one run: a new run never writes over what an earlier one trained.

``logs/<run_name>`` is stable (so ``ckpt_path=last`` finds its checkpoint), which means the same command typed twice
names the same folder. Before anything is written, :func:`claim_run_folder` refuses such a second run unless the
user said what they want: continue it (``ckpt_path=last``), start a new one beside it (``run_name=...``), or replace
it (``overwrite=true``, which deletes the earlier run's outputs first so no stale file is mistaken for the new run's).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from lit_ft.utils.resume import requeued_on_slurm

log = logging.getLogger(__name__)

# What a run leaves that a user may want to keep: its trained weights, its checkpoints, its results and logs.
# (``config.yaml`` is not among them: every run rewrites it first, and alone it holds nothing trained.)
RUN_OUTPUTS = (
    "model",
    "adapter",
    "checkpoints",
    "stages",
    "summary.json",
    "csv",
    "loss_curves.png",
    "samples.jsonl",
    "wandb",
    "tensorboard",
)


class RunFolderInUse(FileExistsError):
    """The run folder already holds another run's outputs and the config did not say what to do with them."""


def earlier_outputs(folder: Path) -> list[Path]:
    """The outputs of an earlier run in ``folder`` (Hydra's own ``.hydra/`` and ``*.log`` files do not count, nor
    a ``csv/`` that holds no ``metrics.csv``: a run that stopped before logging a metric, such as one refused for a
    bad data row, left only the hyperparameters every run writes again)."""
    found = [folder / name for name in RUN_OUTPUTS if (folder / name).exists()]
    return [path for path in found if path.name != "csv" or (path / "metrics.csv").exists()]


def claim_run_folder(folder: str | Path, ckpt_path: str | None, overwrite: bool) -> None:
    """Make sure this run may write into ``folder``; raise :class:`RunFolderInUse` when it may not.

    A run may write there when the folder holds no earlier outputs, when it continues the earlier run (any
    ``ckpt_path``, or a requeued SLURM job), or with ``overwrite=true``, which deletes those outputs first. Only
    the process that starts the others (global rank 0) checks and deletes; ranks it launches find the folder it
    claimed, and ranks started together (torchrun, SLURM) stop with it when it refuses.
    """
    folder = Path(folder)
    found = earlier_outputs(folder)
    if not found or ckpt_path is not None or requeued_on_slurm() or rank_zero_only.rank != 0:
        return
    if not overwrite:
        names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in found)
        raise RunFolderInUse(
            f"{folder} already holds a run ({names}); nothing was changed. Choose one:\n"
            f"  ckpt_path=last    continue that run from its last checkpoint\n"
            f"  run_name=NAME     start a new run in {folder.parent}/NAME\n"
            f"  overwrite=true    replace it: its outputs above are deleted first"
        )
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    log.info("overwrite=true: deleted the earlier run's %s in %s", ", ".join(p.name for p in found), folder)

"""Starting the processes of a multi-device run: Lightning's own subprocess launcher, made safe for Hydra sweeps.

Lightning starts ranks 1..N-1 of a node by re-running the command line (``python train.py ...``) with
``LOCAL_RANK`` set. Under ``python train.py -m a=1,2`` that command line is the whole sweep, so every child would
run every job. :class:`HydraJobLauncher` starts the children on the current *job* instead (its overrides, its
output folder, no ``-m``), and :func:`end_processes` closes a run so the next job of the sweep starts its own
processes. ``torchrun`` and SLURM start every rank themselves; no launcher is involved then.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import lightning as L
import torch.distributed as dist

from lit_ft.utils.lightning_compat import (
    ChildCommandLauncher,
    LauncherChoice,
    is_lightning_subprocess_launcher,
    launched_processes,
)

# What Lightning's launcher sets in the environment of the process that starts the others.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def hydra_job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command (and working folder) that starts ``local_rank`` on the current Hydra job.

    Built from the job's own overrides and output folder, never from the command line: under ``-m`` the command
    line is the whole sweep, and in a single run this is the same command Lightning would build. (Calling
    Lightning's builder from here would recurse: :class:`HydraJobLauncher` puts this function in its place.)
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd, to_absolute_path

    import __main__

    config = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    command = [sys.executable, "-m", spec.name] if spec else [sys.executable, to_absolute_path(sys.argv[0])]
    command.append(f"--config-name={config.job.config_name}")
    command += [f"--config-dir={s.path}" for s in config.runtime.config_sources if s.provider == "command-line"]
    command += list(config.overrides.task)
    command += [
        f'hydra.run.dir="{config.runtime.output_dir}"',
        f"hydra.job.name={config.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",  # the job's .hydra/ folder is written by rank 0
    ]
    return command, get_original_cwd()


class HydraJobLauncher(ChildCommandLauncher):
    """Lightning's subprocess launcher, starting the other ranks on the current Hydra job (see module docstring)."""

    def hydra_child_command(self, local_rank: int) -> tuple[Sequence[str], str]:
        return hydra_job_command(local_rank)


class HydraSafeLaunch(LauncherChoice):
    """Strategy mixin: use :class:`HydraJobLauncher` where Lightning would use its subprocess launcher."""

    def choose_launcher(self, launcher: object) -> object:
        if is_lightning_subprocess_launcher(launcher):
            return HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
        return launcher


def end_processes(trainer: L.Trainer) -> None:
    """Close a finished run's process group; in the process that started the others, wait for them and clear
    the launch environment, so that a later run in this process (the next job of a sweep) launches afresh."""
    processes = launched_processes(trainer.strategy.launcher)
    if processes:
        for process in processes:
            process.wait()
        for key in LAUNCH_ENV:
            os.environ.pop(key, None)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

"""Compose the project's Hydra config the way train.py does, for tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def run_entry_point(
    args: list[str], script: str = "train.py", cwd: Path = REPO, check: bool = True, timeout: float = 600
):
    """``python <script> <args>`` as a user types it, in a subprocess; its completed process (stdout, stderr).

    With ``check``, a non-zero exit fails the test and shows the end of both streams."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def noise_lines(output: str) -> list[str]:
    """The lines of a run's output that would alarm a user: errors, tracebacks, logged warnings and Python
    warnings (``path.py:12: ...``, as ``warnings`` and Lightning print them)."""
    pattern = re.compile(r"ERROR|Traceback|\[WARNING\]|^\S+\.py:\d+: ")
    return [line for line in output.splitlines() if pattern.search(line)]


def assert_close_at_scale(actual: torch.Tensor, expected: torch.Tensor, rel: float = 2e-5, msg: str | None = None):
    """``actual == expected`` up to float32 rounding of two computations that sum in different orders (another
    kernel, thread count or chunking). That rounding grows with the tensor's largest entries, not with each entry,
    so the tolerance is ``rel * max|expected|`` (plus ``rtol=rel``): an embedding gradient whose entries reach 1.2
    may be off by 6e-6 in an entry of 0.04 at two threads and not at one."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=rel * scale, rtol=rel, msg=msg)


def tiny_trainer(**overrides) -> L.Trainer:
    """A CPU ``L.Trainer`` for in-process tests: no logger, checkpoints, progress bar or model summary; one step
    a log line. ``overrides`` (``max_steps``, ``callbacks``, ...) are passed on."""
    settings = dict(
        log_every_n_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**settings, **overrides})


def compose_config(overrides: list[str], output_dir: Path | None = None, name: str = "train") -> DictConfig:
    """The composed config, with ``paths.output_dir`` pointed at ``output_dir`` (no Hydra run needed)."""
    os.environ.setdefault("LIT_FT_ROOT", str(REPO))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose(config_name=name, overrides=[*overrides, *extra])


def step_logged_config(
    files: tuple[Path, Path], step_log: Path, output_dir: Path, overrides: list[str], data: str = "sft"
) -> DictConfig:
    """A tiny-model run on ``files`` (train, val) with no logger or progress bar that writes every step's loss
    to ``step_log`` (``tests.support.faults.StepLog``): the runs that resume tests compare step by step."""
    train_file, val_file = files
    return compose_config(
        [
            "model=tiny",
            f"data={data}",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.max_length=64",
            "data.batch_size=4",
            "logger=none",
            "callbacks.progress_bar=null",
            "+trainer.enable_progress_bar=false",
            "trainer.max_epochs=-1",
            "module.optimizer.lr=3e-3",
            "+callbacks.step_log._target_=tests.support.faults.StepLog",
            f"+callbacks.step_log.path={step_log}",
            *overrides,
        ],
        output_dir=output_dir,
    )


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

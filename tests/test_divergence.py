"""DivergenceGuard: a NaN loss or an infinite gradient skips the update (weights, optimizer state and trained-token
count unchanged) and is counted in the summary; a streak of them stops the run with a clear message."""

from __future__ import annotations

import math

import pytest
import torch

from lit_ft.callbacks import DivergenceError
from lit_ft.run import train
from tests.support.faults import Trace
from tests.support.helpers import compose_config


def run(tmp_path, arithmetic_files, faults: list[str]):
    train_file, val_file = arithmetic_files
    cfg = compose_config(
        [
            "model=tiny",
            "data=sft",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.batch_size=8",
            "logger=none",
            "callbacks.progress_bar=null",
            "callbacks.model_checkpoint=null",
            "callbacks.last_checkpoint=null",
            "callbacks.divergence_guard.max_consecutive=2",
            "+callbacks.trace._target_=tests.support.faults.Trace",
            "+trainer.enable_progress_bar=false",
            "trainer.max_steps=6",
            "trainer.max_epochs=-1",
            "+trainer.limit_val_batches=1",
            "validate_before=false",
            "export=false",
            "module._target_=tests.support.faults.InjectedFaults",
            "module.optimizer.lr=1e-3",
            *faults,
        ],
        output_dir=tmp_path,
    )
    Trace.steps, Trace.metrics = {}, {}
    return train(cfg)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, arithmetic_files):
    # per-task training metrics over windows of 2 steps: (1, 2), (3, 4), (5, 6)
    faults = ["+module.nan_steps=[3]", "+module.inf_grad_steps=[5]", "trainer.log_every_n_steps=2"]
    summary = run(tmp_path, arithmetic_files, faults)
    assert summary["skipped_steps"] == 2 and summary["skipped_step_numbers"] == [3, 5]
    steps = Trace.steps
    for skipped in (3, 5):
        weight, tokens, adam_steps = steps[skipped]
        assert torch.equal(weight, steps[skipped - 1][0])  # no update, not even weight decay
        assert tokens == steps[skipped - 1][1] and adam_steps == steps[skipped - 1][2]
    assert not torch.equal(steps[4][0], steps[3][0]) and torch.isfinite(steps[6][0]).all()
    assert [steps[s][2] for s in range(1, 7)] == [1, 2, 2, 3, 3, 4]  # AdamW stepped only on the good steps
    assert summary["optimizer_steps"] == 6  # the schedule still counts skipped steps
    # the per-task windows leave the skipped steps out: their tokens are the tokens trained on (the NaN of step 3
    # is not in the (3, 4) window's means)
    for end in (2, 4, 6):
        logged = Trace.metrics[end]
        tokens = sum(v for k, v in logged.items() if k.startswith("train/tokens/"))
        assert tokens == steps[end][1] - (steps[end - 2][1] if end > 2 else 0), end
        losses = [v for k, v in logged.items() if k.startswith("train/loss/")]
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses), end


def test_a_streak_of_non_finite_steps_stops_the_run(tmp_path, arithmetic_files):
    with pytest.raises(
        DivergenceError, match=r"NaN/inf for 2 optimizer steps in a row \(steps 2-3.*Lower the learning rate"
    ):
        run(tmp_path, arithmetic_files, ["+module.nan_steps=[2,3]"])

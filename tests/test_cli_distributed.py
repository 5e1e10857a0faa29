"""2-process DDP and FSDP2 started from the command line, as docs/scale.md shows them: ``python train.py
strategy=ddp trainer.devices=2``. Under Hydra, Lightning's launcher builds the other rank's command from Hydra's
config (a path in-process tests never take); this runs it, and checks both ranks trained and validated together."""

from __future__ import annotations

import json

import pytest

from tests.support.helpers import noise_lines, run_entry_point


def tiny_run(log_dir, train_file, val_file, *extra: str) -> dict:
    result = run_entry_point(
        [
            "debug=tiny",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data=sft",
            "trainer.max_steps=2",
            "callbacks.progress_bar=null",
            f"paths.log_dir={log_dir}",
            *extra,
        ]
    )
    assert noise_lines(result.stdout + result.stderr) == []  # no ERROR or warning a user cannot act on, on any rank
    return json.loads((log_dir / "debug_tiny" / "summary.json").read_text())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_run_from_the_command_line(tmp_path, arithmetic_files, strategy):
    one = tiny_run(tmp_path / "one", *arithmetic_files)
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    two = tiny_run(tmp_path / strategy, *arithmetic_files, f"strategy={strategy}", "trainer.devices=2", cache)
    rank0, rank1 = (tmp_path / strategy / "debug_tiny" / name for name in ("train.log", "train_rank1.log"))
    assert rank1.exists()  # the second rank ran this job
    # The node's first process tokenised the data; the other waited and mapped its files.
    assert "Tokenised examples written to" in rank0.read_text() and "Reusing the tokenised" in rank1.read_text()
    assert two["optimizer_steps"] == one["optimizer_steps"] == 2
    # The same weights before training, validated on two ranks and gathered: the one-process loss.
    assert two["val_loss_before"] == pytest.approx(one["val_loss_before"], rel=1e-5)
    assert two["val_loss_after"] != two["val_loss_before"]  # and the two ranks trained


@pytest.mark.parametrize(
    ("strategy", "objective"),
    [
        ("ddp", ["+model.attn_implementation=sdpa_varlen"]),  # GRPO's shared-prompt rollouts (module.shared_prompt)
        ("fsdp", ["module.loss_type=ppo", "module.num_iterations=2"]),
    ],
)
def test_two_process_online_rl(tmp_path, strategy, objective):
    """module=rl on two CPU processes: each rank samples, scores and trains on its own prompts, the gradients are
    averaged (DDP) or the weights sharded (FSDP2: generation gathers the root's weights and steps all ranks together
    until all are done; PPO's value head is a unit of its own). Validation samples too (val/reward). The task_scores
    callback generates before and after training: under FSDP2 with LoRA it needs the same gathering (peft's generate
    bypasses the root's gathering hook)."""
    result = run_entry_point([
        "experiment=rl_legal", "debug=tiny", f"strategy={strategy}", "trainer.devices=2", "trainer.accelerator=cpu",
        "trainer.precision=32-true", "trainer.max_steps=2", "callbacks.progress_bar=null", "module.max_new_tokens=8",
        "data.max_length=256",  # debug=tiny's 128 would cut the classify rows (their clause-type list) and drop them
        "callbacks.task_scores.max_examples=4", "callbacks.task_scores.max_new_tokens=4", f"paths.log_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}", *objective,
    ])  # fmt: skip
    assert noise_lines(result.stdout + result.stderr) == []
    summary = json.loads((tmp_path / "debug_tiny" / "summary.json").read_text())
    assert (tmp_path / "debug_tiny" / "train_rank1.log").exists()  # the second rank ran
    assert summary["optimizer_steps"] == 2 and (tmp_path / "debug_tiny" / "model" / "model.safetensors").exists()
    assert "val/accuracy/classify" in summary["val_before"] and "val/accuracy/classify" in summary["val_after"]
    assert 0 <= summary["val_after"]["val/reward"] <= 1.2  # task metric + 0.2 format, over both ranks' prompts

"""Exact resume: a run killed with SIGKILL (after a step, or in the middle of writing a checkpoint) and resumed with
``ckpt_path=last`` reproduces the uninterrupted run bit for bit on CPU: the same per-step losses, the same final
weights, the same summary. Also the data order across epochs, ``last`` resolution and SLURM requeue."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from safetensors.torch import load_file

from lit_ft.data.repeated_batches import RepeatedBatches
from lit_ft.data.sampler import ResumableSampler
from lit_ft.run import train
from lit_ft.utils.resume import resume_checkpoint
from tests.conftest import write_jsonl
from tests.support.faults import read_step_log
from tests.support.helpers import step_logged_config
from tests.test_preference_modules import toy_pairs

VARIANTS = {
    # Full fine-tuning with gradient accumulation (5 optimizer steps an epoch, last.ckpt every 3): killed after
    # step 8, resumed from step 6 (mid-epoch) through an epoch boundary, by a strategy that restores after setup.
    "full": {
        "overrides": ["trainer.accumulate_grad_batches=2", "trainer.max_steps=12", "+trainer.strategy._target_="
                      "tests.support.faults.RestoreAfterSetup", "callbacks.last_checkpoint.every_n_train_steps=3"],
        "kill": lambda marker: ["+callbacks.hang._target_=tests.support.faults.HangAfterStep",
                                "+callbacks.hang.step=8", f"+callbacks.hang.marker={marker}"],
        "resumed_from_step": 6,
    },
    # LoRA with adapter dropout (so the RNG state matters; 10 steps an epoch, last.ckpt every 4): killed while
    # writing the checkpoint of step 12, so last.ckpt must still be step 8's, complete.
    "lora": {
        "overrides": ["peft=lora", "peft.r=4", "peft.dropout=0.1", "trainer.max_steps=14",
                      "callbacks.last_checkpoint.every_n_train_steps=4"],
        "kill": lambda marker: [
            f"trainer.plugins=[{{_target_:tests.support.faults.HangingCheckpointIO,step:12,marker:'{marker}'}}]"
        ],
        "resumed_from_step": 8,
    },
    # DPO with LoRA and adapter dropout on preference pairs, the reference log-probs precomputed before training
    # (4 steps an epoch, last.ckpt every 3): killed after step 7, resumed from step 6 (mid-epoch) through an epoch
    # boundary, by a strategy that restores after setup. The resumed run cannot recompute the reference (the policy
    # has trained), so it must find the cached log-probs in last.ckpt, loaded before it looks.
    "dpo": {
        "data": "preference",
        "overrides": ["module=dpo", "module.reference=precomputed", "peft=lora", "peft.r=4", "peft.dropout=0.1",
                      "trainer.max_steps=10", "callbacks.last_checkpoint.every_n_train_steps=3",
                      "+trainer.strategy._target_=tests.support.faults.RestoreAfterSetup"],
        "kill": lambda marker: ["+callbacks.hang._target_=tests.support.faults.HangAfterStep",
                                "+callbacks.hang.step=7", f"+callbacks.hang.marker={marker}"],
        "resumed_from_step": 6,
    },
    # Online RL (GRPO) with LoRA and adapter dropout, two optimizer steps per batch of rollouts: completions sampled
    # every other step (a reward that varies within a group, so the policy moves), killed after step 5, resumed from
    # step 3, between the two passes over step 3's rollouts: the checkpoint carries them (with their sampling-time
    # log-probs) and the loader serves their batch once more; later sampling draws from the generators the
    # checkpoint restores, so the resumed run samples the completions the uninterrupted one did. sdpa_varlen: the
    # rollouts in the shared-prompt layout (module.shared_prompt), one padding-free row.
    "rl": {
        "overrides": ["module=rl", "module.reward={_target_:tests.support.rl.EvenTokenReward}", "module.group_size=2",
                      "+model.attn_implementation=sdpa_varlen",
                      "module.num_iterations=2", "module.max_new_tokens=6", "data.padding_free=false", "peft=lora",
                      "peft.r=4", "peft.dropout=0.1", "trainer.max_steps=7",
                      "callbacks.last_checkpoint.every_n_train_steps=3"],
        "kill": lambda marker: ["+callbacks.hang._target_=tests.support.faults.HangAfterStep",
                                "+callbacks.hang.step=5", f"+callbacks.hang.marker={marker}"],
        "resumed_from_step": 3,
    },
}  # fmt: skip


@pytest.fixture
def pair_files(tmp_path):
    """16 training and 8 validation preference pairs ('What is a plus b?': the sum, or a hedge)."""
    return write_jsonl(tmp_path / "train.jsonl", toy_pairs(16, 0)), write_jsonl(tmp_path / "val.jsonl", toy_pairs(8, 1))


def config(tmp_path: Path, files: tuple[Path, Path], run: str, extra: list[str], data: str = "sft"):
    output_dir = tmp_path / ("uninterrupted" if run == "uninterrupted" else "interrupted")
    return step_logged_config(files, tmp_path / (run + ".log"), output_dir, extra, data)


def kill_when_hanging(cfg, marker: Path, timeout: float = 300.0) -> None:
    """Run ``train(cfg)`` in a forked process and SIGKILL it once it signals (``marker``) that it is blocked."""
    process = multiprocessing.get_context("fork").Process(target=train, args=(cfg,))
    process.start()
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.is_alive(), f"the run to kill ended by itself (exit code {process.exitcode})"
        assert time.monotonic() < deadline, "the run to kill never reached its kill point"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_killed_run_resumes_bit_for_bit(variant, tmp_path, request, one_thread):
    spec = VARIANTS[variant]
    data = spec.get("data", "sft")
    files = request.getfixturevalue("pair_files" if data == "preference" else "arithmetic_files")

    def run(name: str, extra: list[str]) -> DictConfig:
        return config(tmp_path, files, name, spec["overrides"] + extra, data)

    uninterrupted = train(run("uninterrupted", []))

    marker = tmp_path / "kill-now"
    kill_when_hanging(run("killed", spec["kill"](marker)), marker)

    checkpoints = tmp_path / "interrupted" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)  # plain types only: no pickled code
    assert last["global_step"] == spec["resumed_from_step"]
    if data == "preference":  # the reference log-probs of all 16 training and 8 validation pairs
        assert {s: v.shape for s, v in last["reference_logps"]["splits"].items()} == {"train": (16, 2), "val": (8, 2)}
    if variant == "rl":  # one pass of two done over the rollouts of step 3, kept with what the second reuses
        [rollouts] = last["rl_rollouts"]["ranks"]  # one process
        assert last["rl_rollouts"]["passes_done"] == 1
        assert {"input_ids", "position_ids", "completion_index", "old_logps", "ref_logps", "advantages"} <= set(
            rollouts
        )
        assert rollouts["input_ids"].shape[0] == 1  # the shared-prompt layout
    if variant == "lora":  # killed mid-save: the half-written file is the temporary one, last.ckpt is whole
        partial = checkpoints / ".last.ckpt.partial"
        assert 0 < partial.stat().st_size < (checkpoints / "last.ckpt").stat().st_size
        assert all("lora_" in key for key in last["state_dict"])  # frozen base weights are not saved

    resumed = train(run("resumed", ["ckpt_path=last"]))

    expected = read_step_log(tmp_path / "uninterrupted.log")
    killed, after = read_step_log(tmp_path / "killed.log"), read_step_log(tmp_path / "resumed.log")
    assert sorted(expected) == list(range(1, uninterrupted["optimizer_steps"] + 1))
    assert killed == {step: expected[step] for step in killed} and max(killed) > spec["resumed_from_step"]
    assert sorted(after) == [s for s in expected if s > spec["resumed_from_step"]]
    assert after == {step: expected[step] for step in after}  # bitwise: float.hex of every step's loss
    assert resumed["resumed_from"] == str(checkpoints / "last.ckpt")
    for key in ("optimizer_steps", f"train_{'pairs' if data == 'preference' else 'tokens'}", "val_before", "val_after"):
        assert resumed[key] == uninterrupted[key], key
    exported = {p.name for p in (tmp_path / "interrupted").glob("*/*") if p.parent.name in ("model", "adapter")}
    assert "model.safetensors" in exported and not any(name.endswith((".bin", ".pt", ".pth")) for name in exported)
    assert ("adapter_model.safetensors" in exported) == (variant != "full")
    weights = load_file(tmp_path / "uninterrupted" / "model" / "model.safetensors")
    resumed_weights = load_file(tmp_path / "interrupted" / "model" / "model.safetensors")
    assert weights.keys() == resumed_weights.keys()
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)


def test_sampler_order_is_seeded_per_epoch_and_resumes_mid_epoch():
    data = list(range(10))
    sampler = ResumableSampler(data, seed=3)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == data and epoch0 != epoch1
    assert list(ResumableSampler(data, seed=3)) == epoch0  # a new process draws the same order
    resumed = ResumableSampler(data, seed=3)
    resumed.resume(epoch=1, skip=4)
    assert list(resumed) == epoch1[4:]
    assert list(resumed) == epoch1  # only the first iteration after resume() starts late
    ranks = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == data


def test_repeated_batches_serve_each_batch_k_times_and_resume_between_repeats():
    loader = torch.utils.data.DataLoader(list(range(5)), batch_size=2)  # batches [0, 1], [2, 3], [4]
    repeated = RepeatedBatches(loader, 2)
    assert len(repeated) == 6 and repeated.batch_size == 2 and repeated.sampler is loader.sampler
    assert [batch.tolist() for batch in repeated] == [[0, 1], [0, 1], [2, 3], [2, 3], [4], [4]]
    repeated.resume(1)  # one repeat of the first batch was served before the resume
    assert [batch.tolist() for batch in repeated] == [[0, 1], [2, 3], [2, 3], [4], [4]]
    assert len(list(repeated)) == 6  # only the first iteration after resume() starts part-way
    with pytest.raises(ValueError, match=r"done must be in \[0, 2\)"):
        repeated.resume(2)


def test_last_resolves_to_the_run_checkpoint(tmp_path, monkeypatch, caplog):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    assert resume_checkpoint(None, tmp_path) is None
    assert resume_checkpoint("last", tmp_path) is None and "starts from scratch" in caplog.text
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resume_checkpoint("last", tmp_path) == str(last)
    assert resume_checkpoint(None, tmp_path) is None  # a plain rerun does not resume by itself

    # A requeued SLURM job resumes without being told, from last.ckpt, else from Lightning's hpc checkpoint.
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_checkpoint(None, tmp_path) == str(last)
    last.unlink()
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"x")
    assert resume_checkpoint(None, tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")

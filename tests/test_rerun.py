"""A rerun never destroys the previous run: the same command typed twice is refused with the three choices, and
each choice (continue, a new run name, overwrite) does what it says. Run as users run it: ``python train.py``."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from lit_ft.utils.run_folder import RunFolderInUse, claim_run_folder
from tests.support.helpers import run_entry_point


def tiny_lora(log_dir: Path, train_file: Path, val_file: Path) -> list[str]:
    return [
        "experiment=lora_legal",
        "model=tiny",
        "callbacks=default",
        "callbacks.last_checkpoint.every_n_train_steps=1",  # so that there is a checkpoint to continue from
        "callbacks.progress_bar=null",
        "logger=csv",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "trainer.max_steps=2",
        "+trainer.enable_progress_bar=false",
        f"paths.log_dir={log_dir}",
    ]


def train_loss_steps(run: Path) -> list[int]:
    """The steps of the ``train/loss`` rows of a run's CSV log, in file order."""
    with (run / "csv" / "metrics.csv").open(newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def digest(folder: Path) -> dict[str, str]:
    """Every file of a folder and the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.*")}


def test_a_rerun_is_refused_and_each_choice_does_what_it_says(tmp_path, arithmetic_files):
    logs = tmp_path / "logs"
    command = tiny_lora(logs, *arithmetic_files)
    run_entry_point(command)
    run = logs / "lora_legal"
    first = {name: digest(run / name) for name in ("model", "adapter")}
    first_summary = json.loads((run / "summary.json").read_text())

    refused = run_entry_point(command, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    for choice in ("ckpt_path=last", "run_name=NAME", "overwrite=true"):
        assert choice in message
    assert "adapter/" in message and "model/" in message and "summary.json" in message
    assert {name: digest(run / name) for name in ("model", "adapter")} == first  # nothing was touched
    assert json.loads((run / "summary.json").read_text()) == first_summary

    run_entry_point([*command, "run_name=lora_legal_r4", "peft.r=4"])  # a variant gets its own folder
    assert (logs / "lora_legal_r4" / "adapter" / "adapter_config.json").exists()
    assert {name: digest(run / name) for name in ("model", "adapter")} == first

    logged_before = train_loss_steps(run)
    run_entry_point([*command, "ckpt_path=last", "trainer.max_steps=3"])  # continue the run
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["resumed_from"].endswith("checkpoints/last.ckpt") and resumed["optimizer_steps"] == 3
    # the CSV log continues: the rows logged before the resume are kept, the new step follows them
    assert train_loss_steps(run) == [*logged_before, max(logged_before) + 1]

    (run / "samples.jsonl").write_text('{"stale": true}\n')  # an output the new run would otherwise append to
    run_entry_point([*command, "overwrite=true", "seed=7"])
    assert json.loads((run / "summary.json").read_text())["optimizer_steps"] == 2
    assert not (run / "samples.jsonl").exists()  # these callbacks write no samples: the stale file is gone
    assert digest(run / "adapter") != first["adapter"]


def test_claim_run_folder_rules(tmp_path, monkeypatch):
    claim_run_folder(tmp_path, None, overwrite=False)  # an empty folder is free
    (tmp_path / "config.yaml").write_text("x: 1\n")  # every run rewrites it first: not an earlier run
    claim_run_folder(tmp_path, None, overwrite=False)
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "hparams.yaml").write_text("x: 1\n")  # a run stopped before its first metric
    claim_run_folder(tmp_path, None, overwrite=False)
    (tmp_path / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.5\n")
    with pytest.raises(RunFolderInUse, match="csv/"):
        claim_run_folder(tmp_path, None, overwrite=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    with pytest.raises(RunFolderInUse, match="checkpoints/"):
        claim_run_folder(tmp_path, None, overwrite=False)
    claim_run_folder(tmp_path, "last", overwrite=False)  # continuing it is allowed, and keeps everything
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    monkeypatch.setattr("lit_ft.utils.run_folder.rank_zero_only.rank", 1)
    claim_run_folder(tmp_path, None, overwrite=True)  # a launched rank never deletes: rank 0 claimed the folder
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    monkeypatch.setattr("lit_ft.utils.run_folder.rank_zero_only.rank", 0)
    claim_run_folder(tmp_path, None, overwrite=True)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "csv").exists()
    assert (tmp_path / "config.yaml").exists()


def test_a_run_refused_for_its_data_does_not_claim_the_folder(tmp_path, arithmetic_files):
    """Fix the row an error named and type the same command again: it runs (nothing was trained to protect)."""
    train_file, val_file = arithmetic_files
    good = train_file.read_text()
    train_file.write_text(good + '{"messages": [{"role": "user"}]}\n')  # a message without content
    command = tiny_lora(tmp_path / "logs", train_file, val_file)
    refused = run_entry_point(command, check=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert "train.jsonl:41: field 'messages[0].content'" in message and "already holds a run" not in message
    train_file.write_text(good)
    run_entry_point(command)
    assert json.loads((tmp_path / "logs" / "lora_legal" / "summary.json").read_text())["optimizer_steps"] == 2

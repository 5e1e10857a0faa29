"""Hydra sweeps: a LoRA rank sweep writes its report (one row per job, best first); the report rebuilds from the
folder; each job has its own W&B run; the Optuna search (optional extra) minimises the returned validation loss."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from lit_ft.sweep_report import REPORT_FILES, main
from tests.support.helpers import run_entry_point
from tests.support.wandb_records import logged_run
from tests.test_wandb import wandb_offline_env  # noqa: F401  (fixture)


def run_train(args: list[str]) -> subprocess.CompletedProcess:
    return run_entry_point(args)


def tiny_lora_overrides(tmp_path, train_file, val_file) -> list[str]:
    return [
        "experiment=lora_legal",
        "model=tiny",
        "callbacks=none",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "trainer.max_steps=4",
        "validate_before=false",
        "export=false",
        "+trainer.enable_progress_bar=false",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]


def read_report(sweep_dir) -> list[dict[str, str]]:
    with (sweep_dir / REPORT_FILES["csv"]).open() as handle:
        return list(csv.DictReader(handle))


def test_rank_sweep_writes_a_sorted_report_and_one_wandb_run_per_job(tmp_path, arithmetic_files, wandb_offline_env):  # noqa: F811
    train_file, val_file = arithmetic_files
    overrides = tiny_lora_overrides(tmp_path, train_file, val_file)
    # W&B alone: the report must not depend on the CSV logger (it reads summary.json's history)
    overrides = [o if o != "callbacks=none" else "callbacks=task_metrics" for o in overrides]  # per-task losses
    run_train(["-m", *overrides, "peft.r=4,8,16,32", "logger=wandb"])
    sweep_dir = tmp_path / "sweep"

    rows = read_report(sweep_dir)
    assert len(rows) == 4
    assert sorted(r["overrides"] for r in rows) == ["peft.r=16", "peft.r=32", "peft.r=4", "peft.r=8"]
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses) and len(set(losses)) == 4
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    for row in rows:  # LoRA on the tiny Llama: r * 1024 parameters per layer, two layers
        assert int(row["trainable_params"]) == 2048 * int(row["overrides"].split("=")[1])
        assert float(row["seconds"]) > 0 and float(row["final_val_loss"]) >= float(row["best_val_loss"])
        assert float(row["val/loss/add"]) > 0 and float(row["val/loss/sum"]) > 0  # the arithmetic set's two tasks
    markdown = (sweep_dir / REPORT_FILES["markdown"]).read_text()
    assert "Common overrides" in markdown and "experiment=lora_legal" in markdown
    assert markdown.count("| `peft.r=") == 4
    assert (sweep_dir / REPORT_FILES["plot"]).stat().st_size > 5000

    # the command rebuilds the same report from the folder
    first = (sweep_dir / REPORT_FILES["csv"]).read_text()
    for name in REPORT_FILES.values():
        (sweep_dir / name).unlink()
    main([str(sweep_dir)])
    assert (sweep_dir / REPORT_FILES["csv"]).read_text() == first

    # every job its own (offline) W&B run, grouped under the experiment and the sweep id, named by its overrides
    runs = [logged_run(next((sweep_dir / str(job)).glob("wandb/offline-run-*/run-*.wandb"))) for job in range(4)]
    assert len({tuple(sorted(r["config"]["peft"].items())) for r in runs}) == 4
    assert {r["run"]["group"] for r in runs} == {f"lora_legal/{sweep_dir.name}"}
    assert sorted(r["run"]["name"] for r in runs) == sorted(f"peft.r={r}" for r in (4, 8, 16, 32))


def write_job(job_dir, overrides, summary, checks):
    """A job folder as a run leaves it: Hydra's overrides, and summary.json with the validation ``history``."""
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if summary is not None:
        history: dict[str, list] = {}
        for check in checks:
            for name, value in check.items():
                if name != "step":
                    history.setdefault(name, []).append([check["step"], value])
        (job_dir / "summary.json").write_text(json.dumps({**summary, "history": history}))


def test_report_takes_per_task_losses_at_the_best_check_and_forgetting_deltas(tmp_path):
    common = ["experiment=lora_legal"]
    checks = [  # a validation before training, two during; the best (0.9) is at step 10, not the last one
        {"step": 0, "val/loss": 2.0, "val/loss/flag": 2.1, "val/loss/revise": 1.9},
        {"step": 5, "train/loss": 1.5},
        {"step": 10, "val/loss": 0.9, "val/loss/flag": 0.8, "val/loss/revise": 1.0},
        {"step": 20, "val/loss": 1.1, "val/loss/flag": 1.3, "val/loss/revise": 0.9},
    ]
    forgetting = {"baseline": {"mcq_acc": 0.5}, "final": {"mcq_acc": 0.45}, "delta": {"mcq_acc": -0.05}, "checks": []}
    summary = {"val_loss_after": 1.1, "trainable_params": 100, "seconds": 3.0, "forgetting": forgetting}
    write_job(tmp_path / "0", [*common, "peft.r=4"], summary, checks)
    write_job(tmp_path / "1", [*common, "peft.r=8"], {**summary, "best_val_loss": 0.5, "val_loss_after": 0.5}, [])
    write_job(tmp_path / "2", [*common, "peft.r=16"], None, [])  # failed: no summary.json
    main([str(tmp_path)])
    rows = read_report(tmp_path)
    assert [r["overrides"] for r in rows] == ["peft.r=8", "peft.r=4", "peft.r=16"]
    assert [r["rank"] for r in rows] == ["1", "2", ""] and rows[2]["status"].startswith("no summary.json")
    assert float(rows[1]["best_val_loss"]) == 0.9 and float(rows[1]["final_val_loss"]) == 1.1
    assert (float(rows[1]["val/loss/flag"]), float(rows[1]["val/loss/revise"])) == (0.8, 1.0)
    assert float(rows[1]["forgetting/delta/mcq_acc"]) == -0.05
    assert "Common overrides: `experiment=lora_legal`" in (tmp_path / REPORT_FILES["markdown"]).read_text()


def test_report_has_a_column_per_task_score_after_training(tmp_path):
    scores = {
        "before": {"classify": {"n": 24, "accuracy": 0.0}},
        "after": {"classify": {"n": 24, "accuracy": 0.75, "f1": 0.5}, "revise": {"n": 16, "rouge_l": 0.41}},
    }
    summary = {"val_loss_after": 1.1, "best_val_loss": 1.0, "task_scores": scores}
    write_job(tmp_path / "0", ["peft.r=4"], summary, [])
    write_job(tmp_path / "1", ["peft.r=8"], {"val_loss_after": 1.2, "best_val_loss": 1.2}, [])  # no task_scores
    main([str(tmp_path)])
    rows = read_report(tmp_path)
    columns = list(rows[0])
    assert (
        columns.index("val/accuracy/classify") < columns.index("val/f1/classify") < columns.index("val/rouge_l/revise")
    )
    assert "val/n/classify" not in columns  # counts are not scores
    assert (float(rows[0]["val/accuracy/classify"]), float(rows[0]["val/rouge_l/revise"])) == (0.75, 0.41)
    assert rows[1]["val/accuracy/classify"] == ""


def test_optuna_search_minimises_the_returned_validation_loss(tmp_path, arithmetic_files):
    # importorskip, not find_spec: without any Hydra plugin the `hydra_plugins` namespace package does not exist
    # and find_spec("hydra_plugins.x") raises instead of returning None.
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install 'lit-ft[optuna]'")
    import yaml

    train_file, val_file = arithmetic_files
    overrides = tiny_lora_overrides(tmp_path, train_file, val_file)
    run_train(["hparams_search=lora_optuna", *overrides, "hydra.sweeper.n_trials=2", "logger=csv"])
    sweep_dir = tmp_path / "sweep"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    rows = read_report(sweep_dir)
    assert len(rows) == 2
    assert results["best_value"] == pytest.approx(float(rows[0]["best_val_loss"]))  # Optuna's best is the report's top
    assert set(results["best_params"]) == {"peft.r", "peft.alpha", "module.optimizer.lr"}

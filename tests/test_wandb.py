"""W&B logging: offline without an API key, metrics / config / summaries read back from the offline run file."""

from __future__ import annotations

import json
import logging

import lightning as L
import pytest
import torch

from lit_ft.loggers import wandb_api_key_configured
from lit_ft.loggers.wandb import result_tables
from lit_ft.run import train
from lit_ft.utils.lightning_compat import wandb_offline
from tests.support.helpers import compose_config
from tests.support.wandb_records import logged_run, offline_without_api_key


@pytest.fixture
def wandb_offline_env(tmp_path, monkeypatch):
    """No API key anywhere; wandb's own folders inside tmp_path."""
    offline_without_api_key(monkeypatch, tmp_path)
    return tmp_path


FORGETTING = {  # the shape of the forgetting check's summary
    "baseline": {"mcq_acc": 0.5, "prose_ppl": 20.0},
    "final": {"mcq_acc": 0.48, "prose_ppl": 21.0},
    "delta": {"mcq_acc": -0.02, "prose_ppl": 1.0},
    "checks": [],
}


class PerTaskValLoss(L.Callback):
    """Logs ``val/loss/<task>`` as the per-task callback does and reports a forgetting summary as the forgetting
    check does: stand-ins, so that this test needs nothing but the logger."""

    def on_validation_epoch_start(self, trainer, pl_module):
        self.sums = {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        for task, name in enumerate(trainer.datamodule.task_names):
            mask = outputs["loss_mask"] & (outputs["task_ids"] == task)
            loss, count = self.sums.get(name, (0.0, 0))
            self.sums[name] = (loss + float((outputs["per_token_loss"] * mask).sum()), count + int(mask.sum()))

    def on_validation_epoch_end(self, trainer, pl_module):
        for name, (loss, count) in self.sums.items():
            pl_module.log(f"val/loss/{name}", torch.tensor(loss / max(count, 1)))

    def summary(self):
        return {"forgetting": FORGETTING}


def test_task_scores_become_a_before_after_table():
    scores = {
        "before": {"classify": {"n": 24, "accuracy": 0.0}},
        "after": {"classify": {"n": 24, "accuracy": 0.75}, "revise": {"n": 16, "rouge_l": 0.41}},
    }
    columns, rows = result_tables({"task_scores": scores})["task_scores"]
    assert columns == ["task_type", "metric", "before", "after"]
    assert rows == [
        ["classify", "n", 24, 24],
        ["classify", "accuracy", 0.0, 0.75],
        ["revise", "n", None, 16],
        ["revise", "rouge_l", None, 0.41],
    ]
    assert "task_scores" not in result_tables({"task_scores": {"before": None, "after": None}})


def test_api_key_detection(wandb_offline_env, monkeypatch):
    assert not wandb_api_key_configured()
    netrc = wandb_offline_env / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_api_key_configured()
    monkeypatch.setenv("NETRC", str(wandb_offline_env / "netrc-absent"))
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert wandb_api_key_configured()


def test_tiny_run_logs_offline_and_the_run_file_holds_metrics_config_and_summaries(
    wandb_offline_env, arithmetic_files, caplog
):
    train_file, val_file = arithmetic_files
    output_dir = wandb_offline_env / "run"
    cfg = compose_config(
        [
            "model=tiny",
            "logger=[wandb,csv]",
            "callbacks=none",
            "+callbacks.per_task._target_=tests.test_wandb.PerTaskValLoss",
            "+trainer.enable_progress_bar=false",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.batch_size=8",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "module.optimizer.lr=3e-3",
            "export=false",
            "task_name=wandb_check",
        ],
        output_dir=output_dir,
    )
    with caplog.at_level(logging.WARNING, logger="lit_ft.loggers.wandb"):
        summary = train(cfg)
    assert "no API key configured" in caplog.text and "wandb sync" in caplog.text

    import wandb

    assert wandb.run is None  # the run was finished: a later run in this process starts its own
    wandb.teardown()  # wait until the W&B service has written everything
    run_files = list((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    run = logged_run(run_files[0])
    # metrics, with the per-task split, against the step they were logged at
    logged = {key for row in run["history"] for key in row}
    assert {"train/loss", "lr", "val/loss", "val/loss/add", "val/loss/sum", "trainer/global_step"} <= logged
    val_rows = [row for row in run["history"] if "val/loss" in row]
    assert val_rows[-1]["val/loss"] == pytest.approx(summary["val_loss_after"], rel=1e-6)
    # the full resolved config
    assert run["config"]["module"]["optimizer"]["lr"] == 3e-3
    assert run["config"]["data"]["train_files"] == str(train_file)
    assert run["config"]["task_name"] == "wandb_check"
    # group and tags from the experiment
    assert run["run"]["group"] == "wandb_check" and "wandb_check" in run["run"]["tags"]
    # summaries: the best val/loss (min), the final per-task losses (last)
    assert run["metrics"]["val/loss"].summary.min and run["metrics"]["val/loss/*"].summary.last
    assert run["summary"]["val/loss"]["min"] == pytest.approx(min(row["val/loss"] for row in val_rows))
    assert run["summary"]["final/val_loss_after"] == pytest.approx(summary["val_loss_after"])
    # forgetting results as a table
    assert any(row.get("forgetting_results/_type") == "table-file" for row in run["history"])
    table = json.loads(next(run_files[0].parent.glob("files/media/table/forgetting_results_*.table.json")).read_text())
    assert table["columns"] == ["metric", "baseline", "final", "delta"]
    assert table["data"] == [["mcq_acc", 0.5, 0.48, -0.02], ["prose_ppl", 20.0, 21.0, 1.0]]


def test_online_run_logs_the_final_adapter_as_an_artifact_and_finishes(tmp_path, monkeypatch):
    from lit_ft.loggers import WandbLogger

    class Run:  # what the logger calls on a W&B run, recorded
        name, dir, summary = "lora_legal", str(tmp_path / "wandb" / "run-x" / "files"), {}

        def __init__(self):
            self.artifacts, self.logged, self.finished = [], [], False

        def log_artifact(self, artifact):
            self.artifacts.append(artifact)

        def log(self, data, step=None):
            self.logged.append(data)

        def finish(self):
            self.finished = True

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "not-used")  # looks configured, so the logger is online
    logger = WandbLogger(save_dir=str(tmp_path), log_artifact=True)
    assert wandb_offline(logger) is False
    run = logger._experiment = Run()
    logger.finish({"adapter_path": str(adapter), "model_path": str(tmp_path / "model"), "val_loss_after": 1.5})
    assert run.finished and run.summary["final/val_loss_after"] == 1.5
    [artifact] = run.artifacts
    assert artifact.type == "model" and artifact.name == "lora_legal-model"
    assert "adapter_config.json" in artifact.manifest.entries

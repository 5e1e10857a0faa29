"""End-to-end runs of the training pipeline, and composition of every shipped experiment."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from lit_ft.run import train
from tests.support.helpers import compose_config, experiment_names

TINY_FAST = ["model=tiny", "logger=csv", "callbacks=none", "+trainer.enable_progress_bar=false"]


def test_tiny_run_learns_and_writes_its_outputs(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    cfg = compose_config(
        [
            *TINY_FAST,
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.batch_size=8",
            "trainer.max_epochs=6",
            "module.optimizer.lr=3e-3",
            "module.scheduler.warmup=0.1",
        ],
        output_dir=tmp_path,
    )
    summary = train(cfg)
    assert summary["val_loss_after"] < summary["val_loss_before"] - 2.0
    written = json.loads((tmp_path / "summary.json").read_text())
    for key in ("val_loss_before", "val_loss_after", "train_tokens", "seconds", "model_path"):
        assert written[key] is not None
    assert written["train_tokens"] == 6 * written["data"]["train"]["loss_tokens"]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert (tmp_path / "csv" / "metrics.csv").read_text().count("train/loss") == 1


def test_packed_run_trains(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    cfg = compose_config(
        [
            *TINY_FAST,
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.packing=true",
            "data.max_length=128",
            "trainer.max_steps=3",
            "export=false",
        ],
        output_dir=tmp_path,
    )
    summary = train(cfg)
    assert summary["optimizer_steps"] == 3 and summary["val_loss_after"] < summary["val_loss_before"]


@pytest.mark.parametrize("experiment", experiment_names())
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "model=tiny"], output_dir=tmp_path)
    assert cfg.task_name == experiment
    module = instantiate(cfg.module)
    module.configure_model()
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) > 0
    instantiate(cfg.trainer)
    for name in ("callbacks", "logger"):
        for entry in (cfg.get(name) or {}).values():
            if entry is not None:
                instantiate(entry)


def test_lora_run_starts_from_an_earlier_full_sft_run(tmp_path, arithmetic_files):
    """The PT -> full SFT -> LoRA workflow: the LoRA run loads the first run's exported model folder."""
    train_file, val_file = arithmetic_files
    data = [f"data.train_files={train_file}", f"data.val_files={val_file}", "data.batch_size=8"]
    full = train(compose_config([*TINY_FAST, *data, "trainer.max_steps=3"], output_dir=tmp_path / "sft"))
    cfg = compose_config(
        [
            *data,
            "model=hf",
            f"model.name_or_path={full['model_path']}",
            "peft=lora",
            "peft.r=4",
            "logger=none",
            "callbacks=none",
            "trainer.max_steps=3",
        ],
        output_dir=tmp_path / "lora",
    )
    lora = train(cfg)
    assert lora["val_loss_before"] == pytest.approx(full["val_loss_after"], rel=1e-5)  # same weights to start
    assert lora["trainable_params"] < lora["total_params"] / 10
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "model" / "model.safetensors").is_file()

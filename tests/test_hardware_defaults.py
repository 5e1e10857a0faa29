"""Defaults that follow the hardware: accelerator, precision and attention chosen when the config is composed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml

import lit_ft.resolvers
from lit_ft.config import validate_config
from tests.support.helpers import REPO, compose_config


def fake_machine(monkeypatch, cuda: bool, bf16: bool = False, flash_attn: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(lit_ft.resolvers, "is_flash_attn_2_available", lambda: flash_attn)


def chosen(overrides: list[str], tmp_path) -> tuple[str, str, str]:
    cfg = compose_config(overrides, output_dir=tmp_path)
    return cfg.trainer.accelerator, cfg.trainer.precision, cfg.model.attn_implementation


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ({"cuda": False}, ("cpu", "32-true", "sdpa_varlen")),
        ({"cuda": True, "bf16": True, "flash_attn": True}, ("cuda", "bf16-mixed", "flash_attention_2")),
        ({"cuda": True, "bf16": True}, ("cuda", "bf16-mixed", "sdpa")),
        ({"cuda": True, "bf16": False}, ("cuda", "32-true", "sdpa")),  # a V100 or T4: no native bf16
    ],
)
def test_default_trainer_follows_the_hardware(machine, expected, monkeypatch, tmp_path):
    fake_machine(monkeypatch, **machine)
    assert chosen(["experiment=lora_legal"], tmp_path) == expected
    validate_config(compose_config(["experiment=lora_legal"], output_dir=tmp_path))  # padding-free with each choice


def test_explicit_trainers_stay_explicit_and_the_attention_follows_them(monkeypatch, tmp_path):
    fake_machine(monkeypatch, cuda=True, bf16=True, flash_attn=True)
    assert chosen(["trainer=cpu"], tmp_path) == ("cpu", "32-true", "sdpa_varlen")
    assert chosen(["trainer=gpu"], tmp_path) == ("gpu", "bf16-mixed", "flash_attention_2")
    # Lightning's own `auto` is understood too; an explicit precision wins over the default
    assert chosen(["trainer.accelerator=auto", "trainer.precision=16-mixed"], tmp_path) == (
        "auto",
        "16-mixed",
        "flash_attention_2",
    )
    fake_machine(monkeypatch, cuda=False)
    assert chosen(["trainer=gpu"], tmp_path)[2] == "sdpa_varlen"  # composed on a CPU login node, say


def test_flash_attention_check_follows_the_chosen_accelerator(monkeypatch, tmp_path):
    fake_machine(monkeypatch, cuda=True, bf16=True, flash_attn=True)
    validate_config(compose_config(["trainer=gpu"], output_dir=tmp_path))
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        validate_config(compose_config(["trainer=cpu", "model.attn_implementation=flash_attention_2"], tmp_path))


def test_train_py_composes_the_flagship_as_before_on_this_cpu():
    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    done = subprocess.run(
        [sys.executable, "train.py", "experiment=lora_legal", "--cfg", "job", "--resolve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = yaml.safe_load(done.stdout)
    assert (cfg["trainer"]["accelerator"], cfg["trainer"]["precision"]) == ("cpu", "32-true")
    assert cfg["model"]["attn_implementation"] == cfg["module"]["model"]["attn_implementation"] == "sdpa_varlen"

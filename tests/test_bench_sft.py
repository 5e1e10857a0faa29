"""The SFT benchmark's device and precision modes (benchmarks/bench_sft.py): both tools on one device and dtype,
and the random-weight SmolLM2 stand-in that scripts/gpu_check.sh benchmarks on a machine without the real weights."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lit_ft.models import resolve_model_path, tiny_llama

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_sft import run_litft  # noqa: E402
from common import MODEL, SMOLLM2_135M_SHAPE, Config, model_dtype, trl_arguments  # noqa: E402


def test_bf16_mode_puts_both_tools_on_one_device_and_dtype(tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    run = {"precision": "bf16", "device": "cpu", "model": str(folder), "steps": 1, "warmup": 1, "threads": 1}
    ours, theirs = Config("lit-ft", "lora", "matched", **run), Config("trl", "lora", "matched", **run)
    assert model_dtype(ours) == model_dtype(theirs) == "bfloat16"  # a LoRA run's frozen base, for both tools
    assert model_dtype(Config("trl", "full", "matched", **run)) == "float32"  # fp32 master weights under autocast
    arguments = trl_arguments(theirs)
    assert arguments["bf16"] and arguments["use_cpu"]  # TRL: bf16 autocast, on the CPU lit-ft runs on
    assert not trl_arguments(Config("trl", "lora", "matched", **{**run, "precision": "fp32"}))["bf16"]

    result = run_litft(ours)  # lit-ft's side, in bf16 on the CPU, reads the folder
    assert math.isfinite(result["loss_first"]) and result["tokens_per_s"] > 0
    assert result["params"] == sum(p.numel() for p in tiny_llama(tokenizer).parameters()) + result["trainable_params"]


def test_random_stand_in_has_smollm2_135m_shape(tokenizer):
    """Speed and memory measured on the stand-in are the real model's: same architecture, same parameter count."""
    real = AutoConfig.from_pretrained(resolve_model_path(MODEL))
    with torch.device("meta"):
        stand_in = tiny_llama(tokenizer, **SMOLLM2_135M_SHAPE)
        reference = AutoModelForCausalLM.from_config(real)
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    assert {k: getattr(stand_in.config, k) for k in keys} == {k: getattr(real, k) for k in keys}
    assert stand_in.config.tie_word_embeddings and real.tie_word_embeddings
    count = sum(p.numel() for p in stand_in.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) and round(count / 1e6, 1) == 134.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_mode_refuses_clearly_without_a_gpu(tmp_path):
    command = [sys.executable, "benchmarks/bench_sft.py", "--device", "cuda", "--bf16", "--out", str(tmp_path / "r.md")]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "torch sees no CUDA GPU" in proc.stderr
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "r.json").exists()


def test_results_record_device_precision_and_model(tmp_path):
    """The saved results say where and how each row ran (old result files without these fields still load)."""
    cfg = Config("lit-ft", "lora", "matched", precision="bf16", device="cuda", model="/x")
    saved = json.loads(json.dumps({"config": cfg.__dict__}))
    assert Config(**saved["config"]) == cfg
    old = {k: v for k, v in saved["config"].items() if k not in ("device", "model")}
    assert (Config(**old).device, Config(**old).model) == ("auto", MODEL)

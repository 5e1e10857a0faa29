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


def test_floor_counts_matmul_flops_and_attention_once_per_step():
    from common import operator_floor

    a, b, bias = torch.randn(64, 32), torch.randn(32, 16), torch.randn(16)
    x, y = torch.randn(3, 8, 5), torch.randn(3, 5, 7)
    q = torch.randn(1, 2, 8, 4)
    steps = 3
    with torch.profiler.profile(record_shapes=True) as profile:
        for _ in range(steps):
            (a @ b).relu()  # mm, and an elementwise op the floor leaves out
            torch.addmm(bias, a, b)  # a linear layer with a bias: bias + a @ b
            torch.bmm(x, y)
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    floor = operator_floor(profile.key_averages(group_by_input_shape=True), steps)
    assert floor["matmul_gflop"] == pytest.approx((2 * 2 * 64 * 32 * 16 + 2 * 3 * 8 * 5 * 7) / 1e9)  # per step
    events = profile.key_averages()
    self_s = lambda keys: sum(e.self_cpu_time_total for e in events if keys(e.key)) / 1e6 / steps  # noqa: E731
    assert floor["matmul_s"] == pytest.approx(self_s(lambda k: k in ("aten::mm", "aten::addmm", "aten::bmm")))
    # self times: the sdpa wrapper and the kernel it calls, each once
    attention = self_s(lambda k: "scaled_dot_product" in k)
    assert attention > 0 and floor["attention_s"] == pytest.approx(attention)


def test_floor_table_says_whether_the_target_is_within_reach():
    from bench_sft import floor_lines

    def ours(matmul_s: float) -> dict:
        floor = {"matmul_s": matmul_s, "matmul_gflop": 150.0, "attention_s": 0.3}
        return {"step_s": 2.5, "floor": floor}

    for matmul_s, ratio, reach in ((1.2, "2.00x", "yes"), (1.5, "1.67x", "no")):
        results = [
            (Config("trl", "lora", "floor"), {"step_s": 3.0}),
            (Config("lit-ft", "lora", "floor"), ours(matmul_s)),
        ]
        row = floor_lines(results, {"fp32": 200.0})[2].split(" | ")
        assert row[7] == ratio and row[-1] == f"{reach} |"  # TRL step / (matmuls + attention), against >= 2.0x
        assert row[8] == "1.05" and row[9] == "2.86x"  # 150 GFLOP at 200 GFLOP/s + 0.3 s attention
    missing = floor_lines([(Config("trl", "full", "floor"), {"step_s": 3.0})], {"fp32": 200.0})[2]
    assert "not measured" in missing

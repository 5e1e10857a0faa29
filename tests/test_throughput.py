"""Throughput counts, the FLOPs formula behind MFU, peak memory, and the progress bar's fields."""

from __future__ import annotations

import types

import pytest
import torch
from torch.utils.data import DataLoader

import lit_ft.utils.perf
from lit_ft.callbacks import ProgressBar, Throughput
from lit_ft.data.batch import example_task_ids, non_padding_tokens
from lit_ft.models import Freeze, LoRA, tiny_llama
from lit_ft.models.flops import head_flops_per_token, training_flops_per_token
from lit_ft.modules import SFTModule
from lit_ft.utils.perf import compute_dtype, measure_matmul_flops, peak_flops
from lit_ft.utils.protocols import TrainedBatch
from tests.test_task_metrics import packed_batch, padded_batch

# tiny_llama: hidden 64, 4 heads of 16, 2 KV heads, FFN 128, vocabulary 49152 (tied head)
LAYER = 64 * 64 + 2 * (64 * 32) + 64 * 64 + 3 * (64 * 128)  # q, k and v, o, gate/up/down = 36,864
HEAD = 49152 * 64


def test_flops_per_token_full_lora_and_frozen_by_hand(tokenizer):
    full = tiny_llama(tokenizer, num_layers=3)
    n = 3 * LAYER + HEAD
    assert training_flops_per_token(full) == 6 * n

    top = Freeze(train_last_layers=1)(tiny_llama(tokenizer, num_layers=3))
    # forward 2N; activation gradients through the top layer and the head only; weight gradients of the top layer
    assert training_flops_per_token(top) == 2 * n + 2 * (LAYER + HEAD) + 2 * LAYER

    head = Freeze(train_lm_head=True)(tiny_llama(tokenizer, num_layers=3))
    # a tied head trains the input embedding too, so gradients flow down through every layer
    assert training_flops_per_token(head) == 2 * n + 2 * n + 2 * HEAD

    lora = LoRA(r=4, target_modules="all-linear")(tiny_llama(tokenizer, num_layers=3))
    adapters = 3 * sum(
        4 * (i + o) for i, o in [(64, 64), (64, 32), (64, 32), (64, 64), (64, 128), (64, 128), (128, 64)]
    )
    assert training_flops_per_token(lora) == 4 * (n + adapters) + 2 * adapters  # about 4N


def test_head_share_of_the_flops_by_hand(tokenizer):
    # forward and the hidden states' gradient; plus the weight gradient when the head trains
    assert head_flops_per_token(tiny_llama(tokenizer, num_layers=3)) == 6 * HEAD
    assert head_flops_per_token(LoRA(r=4, target_modules="all-linear")(tiny_llama(tokenizer, num_layers=3))) == 4 * HEAD
    assert head_flops_per_token(torch.nn.Linear(4, 4)) == 0  # no output embedding, no head share


def test_a_module_with_full_logits_runs_the_head_everywhere(tiny_model):
    module = SFTModule(model=lambda: tiny_model, head_on_loss_tokens=False)
    assert module.head_positions(padded_batch()) is None  # Throughput then counts the head on every token


def test_compute_dtype_and_matmul_peak():
    assert compute_dtype("bf16-mixed", torch.float32) == torch.bfloat16
    assert compute_dtype("16-mixed", torch.float32) == torch.float16
    assert compute_dtype("32-true", torch.float32) == torch.float32
    assert measure_matmul_flops(torch.device("cpu"), size=64, seconds=0.05) > 1e6


def test_throughput_counts_non_padding_tokens_and_examples(tokenizer, tiny_model, tiny_trainer):
    batches = [padded_batch(), packed_batch(), padded_batch(), packed_batch()]
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    throughput = Throughput(peak_flops=1e12, warmup_steps=1)
    trainer = tiny_trainer(max_steps=2, accumulate_grad_batches=2, callbacks=[throughput])
    trainer.fit(module, DataLoader(batches, batch_size=None))
    tokens = int(non_padding_tokens(padded_batch()) + non_padding_tokens(packed_batch()))
    samples = len(example_task_ids(padded_batch())) + len(example_task_ids(packed_batch()))
    assert (tokens, samples) == (15, 4)  # one optimizer step: padding excluded, packed segments counted

    summary = throughput.summary()["perf"]
    assert summary["timed_tokens"] == tokens  # step 2 only: step 1 is warm-up
    assert summary["samples_per_s"] / summary["tokens_per_s"] == pytest.approx(samples / tokens)
    # the module runs the LM head on loss-carrying targets only: 5 of the padded batch's, 4 of the packed one's
    assert int(module.head_positions(padded_batch()) + module.head_positions(packed_batch())) == 9
    flops = training_flops_per_token(module.model) * tokens - head_flops_per_token(module.model) * (tokens - 9)
    assert summary["flops_per_token"] == pytest.approx(flops / tokens)
    assert summary["mfu"] == pytest.approx(flops / tokens * summary["tokens_per_s"] / 1e12)
    assert summary["mfu_basis"] == "peak set in the config (peak_flops)"
    metrics = trainer.callback_metrics  # the last window (step 2) is what was logged last
    assert metrics["perf/tokens_per_s"].item() == pytest.approx(summary["tokens_per_s"], rel=1e-5)
    assert 0.1 < metrics["perf/peak_mem_gb"].item() < 64  # peak RSS of this process


def test_progress_bar_shows_loss_val_loss_and_tokens_per_second():
    trainer = types.SimpleNamespace(
        callback_metrics={
            "train/loss": torch.tensor(1.23456),
            "perf/tokens_per_s": torch.tensor(141.7),
            "val/loss/flag": torch.tensor(2.0),
        }
    )
    assert ProgressBar().get_metrics(trainer, None) == {"loss": "1.2346", "tok/s": "142"}


def test_mfu_on_cpu_is_against_a_measured_matmul(tiny_model, monkeypatch, tiny_trainer):
    measured = []
    monkeypatch.setattr(lit_ft.utils.perf, "measure_matmul_flops", lambda device, dtype: measured.append(dtype) or 5e9)
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    throughput = Throughput(peak_flops="auto", warmup_steps=0)
    trainer = tiny_trainer(max_steps=1, callbacks=[throughput])
    trainer.fit(module, DataLoader([padded_batch()], batch_size=None))
    perf = throughput.summary()["perf"]
    assert measured == [torch.float32] and perf["peak_flops"] == 5e9
    assert perf["mfu_basis"] == "measured matmul peak on this CPU (fp32)"
    assert perf["mfu"] == pytest.approx(perf["flops_per_token"] * perf["tokens_per_s"] / 5e9)


def test_mfu_on_cuda_is_against_the_datasheet_peak(monkeypatch):
    # Lightning's table (get_available_flops), read through the device name, as on a real H100 SXM
    def not_measured(*args):
        raise AssertionError("a listed GPU is not measured")

    monkeypatch.setattr(lit_ft.utils.perf, "measure_matmul_flops", not_measured)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_flops(torch.device("cuda", 0), torch.bfloat16) == (
        989.4e12,
        "datasheet peak (NVIDIA H100 80GB HBM3, bf16)",
    )
    # a GPU Lightning does not list: measured, and said so
    monkeypatch.setattr(lit_ft.utils.perf, "measure_matmul_flops", lambda device, dtype: 1e14)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    with pytest.warns(UserWarning, match="FLOPs not found"):
        assert peak_flops(torch.device("cuda", 0), torch.bfloat16) == (
            1e14,
            "measured matmul peak on Some Future GPU (bf16; no datasheet figure known)",
        )


def test_a_module_training_on_batches_of_its_own_making_is_counted_by_those(tiny_model, tiny_trainer):
    # As online RL trains on the rollouts it samples from the loader's prompts (TrainedBatch): the loader serves
    # padded batches, the module trains on a packed one, and the packed one's tokens and examples are counted.
    class TrainsOnPacked(SFTModule):
        def training_step(self, batch, batch_idx):
            return super().training_step(packed_batch(), batch_idx)

        def trained_batch(self, batch):
            return packed_batch()

    assert isinstance(TrainsOnPacked(model=lambda: tiny_model), TrainedBatch)
    module = TrainsOnPacked(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    throughput = Throughput(peak_flops=1e12, warmup_steps=1)
    tiny_trainer(max_steps=2, callbacks=[throughput]).fit(module, DataLoader([padded_batch()] * 2, batch_size=None))
    tokens, samples = int(non_padding_tokens(packed_batch())), len(example_task_ids(packed_batch()))
    assert (tokens, samples) != (int(non_padding_tokens(padded_batch())), len(example_task_ids(padded_batch())))
    summary = throughput.summary()["perf"]
    assert summary["timed_tokens"] == tokens  # step 2's
    assert summary["samples_per_s"] / summary["tokens_per_s"] == pytest.approx(samples / tokens)
    positions = int(module.head_positions(packed_batch()))  # the head's share is counted on the trained batch too
    flops = training_flops_per_token(module.model) * tokens - head_flops_per_token(module.model) * (tokens - positions)
    assert summary["flops_per_token"] == pytest.approx(flops / tokens)

"""bf16 mixed precision against fp32, fp32 master weights, and the compile option: same losses and gradients.

Tolerances (tiny Llama, hidden 64): bf16 keeps 8 bits of mantissa, so one matmul has a relative error of about
2^-8 = 0.4%; through a few layers the loss agrees within 1% and each gradient tensor within 5% (relative
Frobenius norm), and a 6-step loss curve within 2% at every step.
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_ft.data import Collator
from lit_ft.models import SDPA_VARLEN, LoRA, decoder_layers, tiny_llama
from lit_ft.modules import SFTModule
from tests.support.helpers import tiny_trainer
from tests.test_batching import random_examples


class Record(L.Callback):
    def __init__(self):
        self.losses, self.grads = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.float().clone() for n, p in pl_module.named_parameters() if p.grad is not None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


def fit(
    model, precision, steps=1, lr=0.0, adapter=None, padding_free=False, clip=None, optimizer=None, **module_kwargs
):
    examples = random_examples([12, 7, 16, 9], seed=5) * steps  # the same batch each step: it is learnt
    loader = DataLoader(examples, batch_size=4, collate_fn=Collator(0, padding_free=padding_free))
    module = SFTModule(
        model=lambda: model,
        optimizer=optimizer or (lambda groups: torch.optim.AdamW(groups, lr=lr)),
        adapter=adapter,
        **module_kwargs,
    )
    record = Record()
    trainer = tiny_trainer(max_steps=steps, precision=precision, gradient_clip_val=clip, callbacks=[record])
    torch.manual_seed(0)  # the same adapter initialisation in every run
    trainer.fit(module, loader)
    return module, record


def relative_error(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_bf16_mixed_matches_fp32_gradients_and_loss_curve_with_fp32_master_weights(tiny_model):
    reference = copy.deepcopy(tiny_model)
    module, bf16 = fit(tiny_model, "bf16-mixed", steps=6, lr=3e-3)
    _, fp32 = fit(reference, "32-true", steps=6, lr=3e-3)
    assert all(p.dtype == torch.float32 for p in module.parameters())  # the optimizer updates fp32 weights
    assert bf16.grads[0].keys() == fp32.grads[0].keys()
    for name, grad in fp32.grads[0].items():  # first step: same weights, same batch
        assert relative_error(bf16.grads[0][name], grad) < 5e-2, name
    assert fp32.losses[-1] < fp32.losses[0] - 0.5  # it learns, so comparing the curves means something
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=1e-2)
    for b, f in zip(bf16.losses, fp32.losses):
        assert b == pytest.approx(f, rel=2e-2)


def total_norm(grads) -> float:
    return float(torch.stack([g.float().norm() for g in grads]).norm())


def test_bf16_mixed_clips_the_gradient_norm_with_a_fused_optimizer(tiny_model):
    """trainer=gpu's bf16-mixed with the module's default fused AdamW and trainer.gradient_clip_val: Lightning's
    plugin refuses the pair (a fused step unscales fp16 gradients itself); bf16 has no scaler, so the module clips."""
    seen_by_step = []

    def fused_adamw(groups):
        optimizer = torch.optim.AdamW(groups, lr=1e-3, fused=True)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        optimizer.register_step_post_hook(lambda *_: seen_by_step.append(total_norm(p.grad for p in params)))
        return optimizer

    _, record = fit(tiny_model, "bf16-mixed", steps=2, clip=0.5, optimizer=fused_adamw)
    assert all(total_norm(grads.values()) > 1.0 for grads in record.grads)  # before clipping
    assert seen_by_step == pytest.approx([0.5, 0.5], rel=1e-4)


def test_lora_on_a_bf16_base_trains_fp32_adapters(tiny_model):
    """A frozen base stored in bf16 (half the memory) with fp32 adapters: gradients match an all-fp32 run."""
    reference = copy.deepcopy(tiny_model)
    lora = LoRA(r=4, alpha=8, dropout=0.0)
    module, bf16 = fit(tiny_model.to(torch.bfloat16), "bf16-mixed", adapter=lora)
    _, fp32 = fit(reference, "32-true", adapter=lora)
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for n, p in module.named_parameters() if not p.requires_grad)
    assert bf16.losses[0] == pytest.approx(fp32.losses[0], rel=1e-2)
    for name, grad in fp32.grads[0].items():
        assert relative_error(bf16.grads[0][name], grad) < 5e-2, name


def test_compiled_blocks_give_the_same_loss_and_gradients(tokenizer):
    """Compiled blocks around sdpa_varlen (which runs eagerly inside them) on padding-free batches."""
    model = tiny_llama(tokenizer, attn_implementation=SDPA_VARLEN)
    reference = copy.deepcopy(model)
    module, compiled = fit(model, "32-true", padding_free=True, compile={"backend": "aot_eager"})
    _, eager = fit(reference, "32-true", padding_free=True)
    assert all(
        hasattr(layer, "_compiled_call_impl") and layer._compiled_call_impl for layer in decoder_layers(module.model)
    )
    assert compiled.losses[0] == pytest.approx(eager.losses[0], rel=1e-5)
    for name, grad in eager.grads[0].items():
        torch.testing.assert_close(compiled.grads[0][name], grad, atol=1e-5, rtol=1e-4)

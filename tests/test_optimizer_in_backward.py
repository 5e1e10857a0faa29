"""The optimizer step fused into backward (``module.optimizer_in_backward``): the same weights as the normal step,
no gradient alive after backward, an exact resume from a checkpoint, and clear refusals of what cannot work."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from lit_ft.callbacks import DivergenceGuard
from lit_ft.config import ConfigError, validate_config
from lit_ft.data import Collator
from lit_ft.models import tiny_llama
from lit_ft.modules import SFTModule
from lit_ft.modules.optim import OptimizerInBackward
from lit_ft.modules.schedules import warmup_cosine_schedule
from lit_ft.run import train
from tests.support.faults import read_step_log
from tests.support.helpers import compose_config, step_logged_config, tiny_trainer
from tests.test_batching import random_examples


class Probe(L.Callback):
    """Per step: the loss, the LR, how many gradients are alive after backward, and whether backward itself
    already changed the weights."""

    def __init__(self) -> None:
        self.losses, self.lrs, self.grads_after_backward, self.changed_in_backward = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_after_backward(self, trainer, pl_module):
        params = list(pl_module.parameters())
        self.grads_after_backward.append(sum(p.grad is not None for p in params))
        self.changed_in_backward.append(any(not torch.equal(b, p) for b, p in zip(self.before, params)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def fit(tokenizer, in_backward: bool, steps: int = 4, callbacks=(), **trainer_kwargs) -> tuple[SFTModule, Probe]:
    examples = random_examples([12, 7, 16, 9, 20, 5, 11, 14], seed=3)
    loader = DataLoader(examples, batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    module = SFTModule(
        model=lambda: tiny_llama(tokenizer, seed=0),
        optimizer=partial(torch.optim.AdamW, lr=1e-2, betas=(0.9, 0.95), fused=True),
        scheduler=partial(warmup_cosine_schedule, warmup=1, min_lr_ratio=0.1),  # LR 0 at step 1, then decaying
        weight_decay=0.1,  # two parameter groups (matrices decay, norms do not)
        optimizer_in_backward=in_backward,
    )
    probe = Probe()
    options = {"gradient_clip_val": None, **trainer_kwargs}
    trainer = tiny_trainer(max_steps=steps, callbacks=[probe, *callbacks], **options)
    trainer.fit(module, loader)
    return module, probe


def test_same_weights_as_the_normal_step_and_no_gradient_left_after_backward(tokenizer):
    normal, normal_probe = fit(tokenizer, in_backward=False)
    fused, fused_probe = fit(tokenizer, in_backward=True)

    assert normal_probe.lrs == fused_probe.lrs and len(set(fused_probe.lrs)) == 4  # the scheduler drives it
    assert fused_probe.losses == pytest.approx(normal_probe.losses, abs=1e-6)
    initial = tiny_llama(tokenizer, seed=0).parameters()
    assert (
        max(float((a - b).abs().max()) for a, b in zip(normal.parameters(), initial)) > 1e-2
    )  # moved: 1e-6 means something
    for (name, a), b in zip(normal.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0, msg=name)
    assert fused.train_loss_tokens == normal.train_loss_tokens > 0

    trainable = sum(p.requires_grad for p in fused.parameters())
    assert normal_probe.grads_after_backward == [trainable] * 4 and not any(normal_probe.changed_in_backward)
    assert fused_probe.grads_after_backward == [0] * 4  # each gradient freed as soon as it was used
    assert fused_probe.changed_in_backward == [False, True, True, True]  # updated inside backward (step 1: LR 0)

    # After training the hooks are gone: a later backward leaves the weights alone and keeps its gradients.
    weights = [p.detach().clone() for p in fused.parameters()]
    batch = Collator(tokenizer.pad_token_id)(random_examples([9, 6], seed=1))
    out = fused.token_losses(batch)
    (out["per_token_loss"] * out["loss_mask"]).sum().backward()
    assert all(torch.equal(w, p) for w, p in zip(weights, fused.parameters()))
    assert all(p.grad is not None for p in fused.parameters())


def test_refuses_accumulation_clipping_and_l2sp_with_what_to_change(tokenizer):
    with pytest.raises(ValueError, match=r"accumulate_grad_batches=2.*raise data.batch_size"):
        fit(tokenizer, in_backward=True, steps=1, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match=r"gradient_clip_val=1.0.*set trainer.gradient_clip_val=null"):
        fit(tokenizer, in_backward=True, steps=1, gradient_clip_val=1.0)
    module = SFTModule(model=lambda: tiny_llama(tokenizer, seed=0), l2sp=0.1, optimizer_in_backward=True)
    loader = DataLoader(random_examples([9, 6]), batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    trainer = tiny_trainer(max_steps=1, gradient_clip_val=None)
    with pytest.raises(ValueError, match=r"module.l2sp=0.1.*set module.l2sp=0"):
        trainer.fit(module, loader)
    # A config is refused before anything is built (the default trainer clips at 1.0).
    cfg = compose_config(["model=tiny", "module.optimizer_in_backward=true", "trainer.accumulate_grad_batches=4"])
    with pytest.raises(ConfigError, match=r"accumulate_grad_batches=4.*; trainer.gradient_clip_val=1.0"):
        validate_config(cfg)
    validate_config(
        compose_config(["model=tiny", "module.optimizer_in_backward=true", "trainer.gradient_clip_val=null"])
    )


class NaNLossAtStep(L.Callback):
    """Make the loss of optimizer step ``step`` NaN (through the final norm's output); record whether that step
    left the weights as they were."""

    def __init__(self, step: int) -> None:
        self.step, self.unchanged = step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.step:
            self.before = [p.detach().clone() for p in pl_module.parameters()]
            norm = pl_module.model.model.norm
            self.handle = norm.register_forward_hook(lambda module, args, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.handle.remove()
            self.unchanged = all(torch.equal(b, p) for b, p in zip(self.before, pl_module.parameters()))


def test_a_nan_loss_skips_the_update_and_the_divergence_guard_counts_it(tokenizer):
    nan, guard = NaNLossAtStep(step=2), DivergenceGuard(max_consecutive=2)
    module, probe = fit(tokenizer, in_backward=True, steps=3, callbacks=[nan, guard])
    assert nan.unchanged is True and guard.skipped_step_numbers == [2]
    assert probe.changed_in_backward == [False, False, True]  # step 1 at LR 0, step 2 skipped, step 3 trains
    assert all(torch.isfinite(p).all() for p in module.parameters())


class StopAfterStep(L.Callback):
    """End fitting cleanly after optimizer step ``step`` (the LR schedule still spans the planned steps)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def test_checkpoint_holds_the_per_parameter_states_and_resumes_exactly(
    tmp_path, arithmetic_files, tokenizer, one_thread
):
    def run(name: str, output: str, *extra: str) -> dict:
        overrides = [
            "trainer.max_steps=6",
            "trainer.gradient_clip_val=null",
            "module.optimizer_in_backward=true",
            "callbacks.last_checkpoint.every_n_train_steps=3",
            *extra,
        ]
        return train(step_logged_config(arithmetic_files, tmp_path / (name + ".log"), tmp_path / output, overrides))

    uninterrupted = run("uninterrupted", "a")
    stop = "+callbacks.stop._target_=tests.test_optimizer_in_backward.StopAfterStep"
    run("stopped", "b", stop, "+callbacks.stop.step=3")
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = run("resumed", "b", "ckpt_path=last")

    assert last["global_step"] == 3
    states = last["optimizer_states"][0]["per_parameter"]
    assert len(states) == len(list(tiny_llama(tokenizer).parameters()))  # conf/model/tiny.yaml's sizes
    assert all(float(s["state"][0]["step"]) == 3 and "exp_avg_sq" in s["state"][0] for s in states)

    expected, after = read_step_log(tmp_path / "uninterrupted.log"), read_step_log(tmp_path / "resumed.log")
    assert sorted(after) == [4, 5, 6] and after == {step: expected[step] for step in after}  # bitwise losses
    assert resumed["train_tokens"] == uninterrupted["train_tokens"]
    weights, resumed_weights = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)


def test_state_dict_round_trip_restores_every_parameter_state():
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = OptimizerInBackward([{"params": params}], partial(torch.optim.AdamW, lr=0.1))
    (params[0].sum() + (params[1] ** 2).sum()).backward()
    assert all(p.grad is None for p in params)
    state = optimizer.state_dict()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = OptimizerInBackward([{"params": copies}], partial(torch.optim.AdamW, lr=0.5))
    restored.load_state_dict(state)
    assert restored.param_groups[0]["lr"] == 0.1
    for a, b in zip(optimizer.optimizers, restored.optimizers):
        torch.testing.assert_close(b.state_dict()["state"], a.state_dict()["state"])
    with pytest.raises(ValueError, match="1 per-parameter optimizer states, expected 2"):
        restored.load_state_dict({**state, "per_parameter": state["per_parameter"][:1]})

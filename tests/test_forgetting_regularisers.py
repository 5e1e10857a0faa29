"""The regularisers against forgetting beside L2-SP: EWC (its Fisher, its gradient and its resume) and mixout (its
expectation, its eval-mode identity, which layers it mixes)."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_ft.losses import ewc_penalty
from lit_ft.models import LoRA
from lit_ft.modules import EWC, Mixout, SFTModule
from lit_ft.modules.ewc import diagonal_fisher
from lit_ft.modules.mixout import MixoutLinear
from tests.support.helpers import run_entry_point
from tests.test_recipes import StepRecorder, fit, toy_examples

PROSE = Path(__file__).resolve().parents[1] / "data" / "general" / "prose.jsonl"


def test_diagonal_fisher_of_a_two_parameter_model_matches_hand_computation():
    # l_n = (a x_n + b - y_n)^2 at a = 0.5, b = 1: residuals r = -0.5, 1, -2.5 for (x, y) = (1, 2), (2, 1), (3, 5)
    a, b = torch.tensor(0.5, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    examples = [(1.0, 2.0), (2.0, 1.0), (3.0, 5.0)]
    fisher, count = diagonal_fisher(lambda e: (a * e[0] + b - e[1]) ** 2, {"a": a, "b": b}, examples)
    # dl/da = 2 r x = -1, 4, -15 and dl/db = 2 r = -1, 2, -5: F = mean of the squares
    assert count == 3
    assert math.isclose(fisher["a"].item(), (1 + 16 + 225) / 3, rel_tol=1e-6)
    assert math.isclose(fisher["b"].item(), (1 + 4 + 25) / 3, rel_tol=1e-6)
    # the batch-gradient-squared shortcut, (mean gradient)^2, is another (biased) number: (-12/3)^2 = 16
    assert not math.isclose(fisher["a"].item(), 16.0)
    assert a.grad is None and b.grad is None  # .grad untouched


def test_ewc_adds_the_gradient_of_its_penalty_and_logs_it(tiny_model):
    strength = 50.0
    generator = torch.Generator().manual_seed(3)
    names = [f"model.{n}" for n, _ in tiny_model.named_parameters()]
    anchors = {n: p.detach().clone() for n, p in zip(names, tiny_model.parameters())}
    fisher = {n: torch.rand(p.shape, generator=generator) for n, p in anchors.items()}

    def run(ewc: EWC | None):
        model = copy.deepcopy(tiny_model)
        with torch.no_grad():  # away from theta_0 so the penalty has a gradient
            for parameter in model.parameters():
                parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
        module = SFTModule(model=lambda: model, optimizer=lambda g: torch.optim.SGD(g, lr=0.0), ewc=ewc)
        if ewc is not None:  # a Fisher already there (as after a resume): none is estimated
            ewc.load_state_dict({"anchors": anchors, "fisher": fisher, "examples": 1})
        recorder = StepRecorder()
        trainer = fit(module, toy_examples(2), [recorder])
        return module, recorder, trainer

    _, plain, _ = run(None)
    module, regularised, trainer = run(EWC(strength, str(PROSE)))
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    penalty = strength * ewc_penalty(params, [anchors[n] for n in names], [fisher[n] for n in names])
    expected = torch.autograd.grad(penalty, params)
    for name, grad in zip(names, expected):
        torch.testing.assert_close(regularised.grads[name] - plain.grads[name], grad, atol=1e-6, rtol=1e-5)
    assert math.isclose(trainer.callback_metrics["train/ewc"].item(), penalty.item(), rel_tol=1e-5)
    assert penalty.item() > 0


def test_ewc_of_lora_holds_lora_b_only_as_lora_a_has_no_fisher_at_initialisation(tiny_model, tokenizer):
    ewc = EWC(1.0, str(PROSE), max_examples=2, max_length=32)
    module = SFTModule(model=lambda: tiny_model, adapter=LoRA(r=2, alpha=4, dropout=0.5))
    module.configure_model()
    ewc.estimate(module, tokenizer, module.mean_token_loss)
    assert ewc.examples == 2 and set(ewc.fisher) == set(ewc.anchors) == module.trainable_names
    lora_a = [f for n, f in ewc.fisher.items() if "lora_A" in n]
    lora_b = [f for n, f in ewc.fisher.items() if "lora_B" in n]
    assert lora_a and all(torch.equal(f, torch.zeros_like(f)) for f in lora_a)  # B = 0: the loss is flat in A
    assert all(f.min() >= 0 for f in lora_b) and sum(f.sum() for f in lora_b) > 0
    assert all(torch.equal(a, torch.zeros_like(a)) for n, a in ewc.anchors.items() if "lora_B" in n)  # theta_0 of B
    assert module.training  # dropout was off for the estimate only


def test_ewc_refuses_a_strength_that_is_not_positive():
    with pytest.raises(ValueError, match="must be > 0"):
        EWC(0.0, str(PROSE))


def effective_weight(layer: nn.Linear) -> torch.Tensor:
    """The weight a bias-free layer applies in this forward: its output on the identity, transposed."""
    return layer(torch.eye(layer.in_features)).T


def test_mixout_keeps_the_expected_weight_and_is_the_plain_layer_in_eval_mode():
    torch.manual_seed(0)
    p = 0.3
    layer = nn.Linear(4, 3, bias=False)
    anchor = layer.weight.detach().clone()
    mixed = MixoutLinear(layer, p)
    with torch.no_grad():
        layer.weight.add_(torch.randn(3, 4))  # fine-tuned away from w0
    w, w0 = layer.weight.detach(), anchor

    draws = torch.stack([effective_weight(mixed) for _ in range(4000)]).detach()
    kept = (w - p * w0) / (1 - p)  # the paper's formula with mask = 1; with mask = 0 it gives w0
    is_anchor = torch.isclose(draws, w0.expand_as(draws), atol=1e-6)
    assert (is_anchor | torch.isclose(draws, kept.expand_as(draws), atol=1e-6)).all()
    assert abs(is_anchor.float().mean().item() - p) < 0.01  # 48,000 Bernoulli draws: std 0.002
    assert torch.allclose((1 - p) * kept + p * w0, w, atol=1e-6)  # the expectation, exactly
    torch.testing.assert_close(draws.mean(0), w, atol=0.1, rtol=0)  # and by sampling (std of the mean <= 0.02)

    mixed.eval()
    x = torch.randn(5, 4)
    assert torch.equal(mixed(x), F.linear(x, w))
    assert torch.equal(effective_weight(mixed), effective_weight(mixed))  # deterministic: nothing is drawn


def test_mixout_mixes_the_trainable_linear_layers_and_keeps_the_state_dict(tiny_model):
    full = copy.deepcopy(tiny_model)
    keys = set(full.state_dict())
    names = Mixout(0.1).apply(full)
    assert len(names) == 14 and "lm_head" not in names  # 7 projections in each of the 2 layers, not the head
    assert set(full.state_dict()) == keys  # same names, anchor not saved

    lora = LoRA(r=2, alpha=4)(copy.deepcopy(tiny_model))
    names = Mixout(0.1, target_modules=["q_proj"]).apply(lora)
    assert sorted(n.split("q_proj.")[1] for n in names) == ["lora_A.default"] * 2 + ["lora_B.default"] * 2
    assert all(isinstance(lora.get_submodule(n), MixoutLinear) for n in names)
    with pytest.raises(ValueError, match="no trainable linear layer matches"):
        Mixout(0.1, target_modules=["lm_head"]).apply(LoRA(r=2)(copy.deepcopy(tiny_model)))  # frozen under LoRA
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        Mixout(1.0)


def test_mixout_trains_the_mixed_layers_and_leaves_plain_ones_when_training_ends(tiny_model):
    seen = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(sum(isinstance(m, MixoutLinear) for m in pl_module.modules()))

    module = SFTModule(model=lambda: tiny_model, mixout=Mixout(0.5))
    recorder = StepRecorder()
    fit(module, toy_examples(2), [Probe(), recorder])
    assert seen == [14]
    assert not any(isinstance(m, MixoutLinear) for m in module.modules())  # plain nn.Linear again, same weights
    after = dict(module.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in recorder.after.items())
    assert any(not torch.equal(recorder.before[n], p) for n, p in recorder.after.items())  # it trained


def metrics(run: Path) -> dict[int, dict[str, str]]:
    """The logged rows of a run's ``csv/metrics.csv`` that carry a training loss, by step."""
    with (run / "csv" / "metrics.csv").open() as handle:
        return {int(r["step"]): r for r in csv.DictReader(handle) if r.get("train/loss")}


@pytest.mark.slow
def test_ewc_and_mixout_runs_log_the_penalty_and_resume_with_the_same_fisher(tmp_path):
    command = [
        "experiment=sft_legal",
        "debug=tiny",
        "logger=csv",
        "ewc=general",
        "module.ewc.max_examples=3",
        "mixout=default",
        "callbacks=[default]",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "scheduler=constant",  # the same LR at each step whatever max_steps the run is given
        "module.scheduler.warmup=0",
        f"paths.log_dir={tmp_path}",
        "trainer.max_steps=4",
    ]
    first = run_entry_point([*command, "run_name=whole"])
    assert "EWC: diagonal Fisher of 3,219,776 weights over 3 passages" in first.stdout + first.stderr
    assert "mixout (p=0.1) on 14 linear layers" in first.stdout + first.stderr
    whole = metrics(tmp_path / "whole")
    assert float(whole[0]["train/ewc"]) == 0.0  # theta = theta_0 at the first step
    assert all(float(whole[s]["train/ewc"]) > 0 for s in (1, 2, 3))

    run_entry_point([*command, "run_name=resumed", "trainer.max_steps=2"])
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["ewc"]["examples"] == 3 and len(checkpoint["ewc"]["fisher"]) == len(checkpoint["ewc"]["anchors"])
    second = run_entry_point([*command, "run_name=resumed", "ckpt_path=last"])
    assert "EWC: diagonal Fisher" not in second.stdout + second.stderr  # loaded, not estimated at trained weights
    resumed = metrics(tmp_path / "resumed")
    for step in (2, 3):  # the same penalty and loss as the run that was not stopped (and the same mixout masks)
        assert resumed[step]["train/ewc"] == whole[step]["train/ewc"]
        assert resumed[step]["train/loss"] == whole[step]["train/loss"]

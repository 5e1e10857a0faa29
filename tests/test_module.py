"""The module's loss reduction, optimizer groups and LR schedule."""

from __future__ import annotations

import copy
import math
import re

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_ft.data import Collator
from lit_ft.losses import token_cross_entropy
from lit_ft.models import Freeze, LoRA
from lit_ft.modules import SFTModule
from lit_ft.modules.optim import decay_groups
from lit_ft.modules.schedules import warmup_cosine_schedule


class GradCapture(L.Callback):
    """The gradients the optimizer step gets (before clipping): the module frees them right after the step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}


class GradsAfterStep(L.Callback):
    """Whether any gradient is still held at the end of each training batch."""

    def __init__(self) -> None:
        self.held: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.held.append(any(p.grad is not None for p in pl_module.parameters()))


def test_accumulated_gradient_is_token_mean_over_the_window(tokenizer, tiny_model, tiny_trainer):
    # micro-batch 1 has 1 loss token, micro-batch 2 has 6: a mean of means would weight them equally
    examples = [
        {"input_ids": [11, 12, 13, 14], "labels": [-100, -100, -100, 14], "task_ids": [0] * 4},
        {"input_ids": [21, 22, 23, 24, 25, 26, 27], "labels": [-100, 22, 23, 24, 25, 26, 27], "task_ids": [0] * 7},
    ]
    loader = DataLoader(examples, batch_size=1, collate_fn=Collator(tokenizer.pad_token_id))
    reference = copy.deepcopy(tiny_model)
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    capture = GradCapture()
    trainer = tiny_trainer(max_steps=1, accumulate_grad_batches=2, callbacks=[capture], gradient_clip_val=None)
    trainer.fit(module, loader)

    total, tokens = 0.0, 0
    for batch in loader:
        per_token, mask = token_cross_entropy(reference(input_ids=batch["input_ids"]).logits, batch["labels"])
        total = total + (per_token * mask).sum()
        tokens += int(mask.sum())
    (total / tokens).backward()
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(capture.grads[f"model.{name}"], parameter.grad, atol=1e-5, rtol=1e-4)
    assert module.train_loss_tokens == 7
    assert math.isclose(trainer.callback_metrics["train/loss"].item(), (total / tokens).item(), rel_tol=1e-5)


def test_gradients_are_freed_right_after_each_optimizer_step(tokenizer, tiny_model, tiny_trainer):
    """Not in the next step's closure, after its forward: the next forward's activations never share the peak
    with the last step's gradients. Inside an accumulation window they are kept, as the window needs them."""
    examples = [{"input_ids": [11, 12, 13, 14], "labels": [-100, 12, 13, 14], "task_ids": [0] * 4}] * 4
    loader = DataLoader(examples, batch_size=1, collate_fn=Collator(tokenizer.pad_token_id))
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1))
    grads, capture = GradsAfterStep(), GradCapture()
    tiny_trainer(max_steps=2, accumulate_grad_batches=2, callbacks=[grads, capture]).fit(module, loader)
    assert grads.held == [True, False, True, False]  # micro-batch 1 of each window keeps them, the step frees them
    assert capture.grads and all(g.abs().sum() > 0 for g in capture.grads.values())  # the step still saw them


def test_freeze_beside_an_adapter_is_refused_when_the_module_is_built():
    built = []  # refused before the model factory runs
    with pytest.raises(ValueError, match=re.escape("peft and freeze are both set: peft freezes the whole base")):
        SFTModule(model=lambda: built.append(True), freeze=Freeze(train_last_layers=1), adapter=LoRA(r=4))
    assert not built
    assert SFTModule(model=lambda: None, freeze=Freeze(train_last_layers=1)).freeze.train_last_layers == 1
    assert SFTModule(model=lambda: None, adapter=LoRA(r=4)).adapter.r == 4


def test_no_weight_decay_on_norms_and_biases(tiny_model):
    decay, no_decay = decay_groups(tiny_model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    assert all("norm" in names[id(p)] for p in no_decay["params"]) and no_decay["params"]
    assert not any("norm" in names[id(p)] for p in decay["params"])


def test_warmup_cosine_schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine_schedule(optimizer, num_training_steps=110, warmup=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(111):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 0.0 and math.isclose(lrs[5], 0.5) and math.isclose(lrs[10], 1.0)
    assert math.isclose(lrs[60], 0.1 + 0.9 * 0.5, rel_tol=1e-9)  # half-way through the decay
    assert math.isclose(lrs[110], 0.1)
    ratio = warmup_cosine_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, warmup=0.2)
    assert ratio.lr_lambdas[0](10) == 0.5


def test_token_losses_with_hidden_give_the_final_hidden_state_on_either_head_path(tiny_model):
    # PPO's value head reads the last hidden state (after the final norm) at each position that predicts a target:
    # the decoder's output on the loss-tokens path, the model's last hidden_states on the full-logits path
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    batch |= {"labels": torch.tensor([[-100, -100, 7, 8]]), "task_ids": torch.zeros(1, 4, dtype=torch.long)}
    expected = tiny_model.model(input_ids=batch["input_ids"]).last_hidden_state[:, :-1]
    for head_on_loss_tokens in (True, False):
        module = SFTModule(model=lambda: tiny_model, head_on_loss_tokens=head_on_loss_tokens)
        module.model = tiny_model.eval()
        out = module.token_losses(batch, with_hidden=True)
        torch.testing.assert_close(out["hidden"], expected)
        assert out["hidden"].shape == (1, 3, tiny_model.config.hidden_size) and out["loss_mask"].shape == (1, 3)
        assert "hidden" not in module.token_losses(batch)

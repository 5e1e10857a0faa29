"""Training recipes: LR schedules, batch-size LR scaling, layer-wise LRs, gradual unfreezing, L2-SP, NEFTune."""

from __future__ import annotations

import copy
import logging
import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from lit_ft.callbacks import GradualUnfreezing, NEFTune
from lit_ft.data import Collator
from lit_ft.losses import l2_sp_penalty
from lit_ft.modules import SFTModule
from lit_ft.modules.optim import LRScaling
from lit_ft.modules.schedules import warmup_decay_schedule
from tests.support.helpers import assert_close_at_scale, compose_config, tiny_trainer


def constant_lr(optimizer, num_training_steps):
    return LambdaLR(optimizer, lambda step: 1.0)


def lr_trace(schedule_factory, steps: int = 100, base_lr: float = 2.0) -> list[float]:
    """The LR at optimizer steps 0..steps of a schedule built over ``steps`` training steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedule = schedule_factory(optimizer, num_training_steps=steps)
    lrs = []
    for _ in range(steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


# 100 steps, base LR 2, warmup 10 steps (given as the ratio 0.1), floor 0.1: {step: expected LR}
SCHEDULES = {
    "cosine": ([], {0: 0.0, 5: 1.0, 10: 2.0, 55: 2 * (0.1 + 0.9 * 0.5), 100: 0.2}),
    "linear": ([], {5: 1.0, 10: 2.0, 40: 2 * (0.1 + 0.9 * (1 - 30 / 90)), 100: 0.2}),
    "constant": ([], {5: 1.0, 10: 2.0, 60: 2.0, 100: 2.0}),
    # stable until step 80, then linear to 0 over the last 20 steps
    "wsd": (["module.scheduler.decay=0.2"], {5: 1.0, 10: 2.0, 80: 2.0, 90: 1.0, 95: 0.5, 100: 0.0}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_scheduler_config_gives_the_expected_lr_at_given_steps(name):
    overrides, expected = SCHEDULES[name]
    cfg = compose_config(["model=tiny", f"scheduler={name}", "module.scheduler.warmup=0.1", *overrides])
    lrs = lr_trace(instantiate(cfg.module.scheduler))
    for step, lr in expected.items():
        assert math.isclose(lrs[step], lr, abs_tol=1e-12), (name, step, lrs[step], lr)


def test_warmup_in_steps_and_sqrt_decay():
    lrs = lr_trace(lambda o, num_training_steps: warmup_decay_schedule(o, num_training_steps, 4, 0.0, "sqrt", 20))
    assert lrs[2] == 1.0 and lrs[4] == 2.0 and lrs[80] == 2.0
    assert math.isclose(lrs[85], 2 * (1 - math.sqrt(5 / 20)))  # 5 of 20 decay steps done
    assert lrs[100] == 0.0


def fit(module, examples, callbacks=(), batch_size=1, **trainer_kwargs):
    loader = DataLoader(examples, batch_size=batch_size, collate_fn=Collator(pad_token_id=0))
    trainer = tiny_trainer(gradient_clip_val=None, callbacks=list(callbacks), **{"max_steps": 1, **trainer_kwargs})
    trainer.fit(module, loader)
    return trainer


def toy_examples(n: int, length: int = 6) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(10, 1000, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": ids, "task_ids": [0] * length})
    return rows


class StepRecorder(L.Callback):
    """Gradients just before the optimizer step, and the weights just before and after it."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.grads = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def test_layer_wise_lrs_decay_from_the_head_down_and_drive_the_update(tiny_model):
    # tiny Llama: embeddings (tied head) depth 0, layers 0 and 1 depths 1 and 2, final norm depth 3 (top)
    module = SFTModule(
        model=lambda: tiny_model,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0),
        scheduler=constant_lr,
        layer_lr_decay=0.5,
    )
    recorder = StepRecorder()
    trainer = fit(module, toy_examples(1), [recorder])
    lr_of = {id(p): g["lr"] for g in trainer.optimizers[0].param_groups for p in g["params"]}
    expected = {"embed_tokens": 0.125, "layers.0.": 0.25, "layers.1.": 0.5, "model.model.norm": 1.0}
    seen = set()
    for name, parameter in module.named_parameters():
        key = next(k for k in expected if k in name)
        seen.add(key)
        assert lr_of[id(parameter)] == expected[key], name
        # plain SGD: the step moved each weight by exactly -lr * grad
        torch.testing.assert_close(
            recorder.after[name] - recorder.before[name], -expected[key] * recorder.grads[name], atol=1e-6, rtol=1e-5
        )
    assert seen == set(expected)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1.0  # the group logged as `lr` is the head's
    assert trainer.callback_metrics["lr"] == 1.0


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5])
def test_layer_lr_decay_outside_0_to_1_is_refused(decay):
    with pytest.raises(ValueError, match=rf"layer_lr_decay={decay}: must be in \(0, 1\]"):
        SFTModule(model=lambda: None, layer_lr_decay=decay)


def test_the_logged_lr_is_the_base_lr_when_the_top_does_not_train(tokenizer):
    from lit_ft.models import LoRA, tiny_llama

    module = SFTModule(  # LoRA: head and final norm are frozen, so the first group is the top decoder layer's
        model=lambda: tiny_llama(tokenizer, seed=0),
        adapter=LoRA(r=4),
        optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0),
        scheduler=constant_lr,
        layer_lr_decay=0.5,
    )
    trainer = fit(module, toy_examples(1))
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5 and trainer.callback_metrics["lr"] == 1.0


def test_lr_scaling_with_global_batch_is_applied_and_logged(tiny_model, caplog):
    module = SFTModule(
        model=lambda: tiny_model,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1),
        scheduler=constant_lr,
        lr_scaling=LRScaling(base_batch_size=2, rule="sqrt"),
    )
    with caplog.at_level(logging.INFO, logger="lit_ft.modules.optim"):
        trainer = fit(module, toy_examples(8), batch_size=4, accumulate_grad_batches=2)
    # global batch 4 x 2 = 8 = 4 x the base batch: LR x sqrt(4)
    assert all(math.isclose(g["lr"], 0.2) for g in trainer.optimizers[0].param_groups)
    assert "LR scaling (sqrt rule): global batch 8, base batch 2 -> LR x 2" in caplog.text
    assert LRScaling(base_batch_size=2, rule="linear")(8) == 4.0


def test_gradual_unfreezing_trains_one_more_level_per_epoch(tiny_model):
    class EpochProbe(L.Callback):
        def __init__(self):
            self.trainable, self.changed = [], []

        def on_train_epoch_start(self, trainer, pl_module):
            self.start = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
            self.trainable.append({n for n, p in pl_module.named_parameters() if p.requires_grad})

        def on_train_epoch_end(self, trainer, pl_module):
            self.changed.append({n for n, p in pl_module.named_parameters() if not torch.equal(p, self.start[n])})

    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1))
    probe = EpochProbe()
    unfreezing = GradualUnfreezing(initial=1, every_n_epochs=1)
    fit(module, toy_examples(1), [unfreezing, probe], max_steps=-1, max_epochs=3)

    def names(*parts):
        return {n for n, _ in module.named_parameters() if any(part in n for part in parts)}

    levels = [names("model.model.norm"), names("layers.1."), names("layers.0.")]
    for epoch in range(3):
        expected = set().union(*levels[: epoch + 1])
        assert probe.trainable[epoch] == expected
        assert probe.changed[epoch] == expected  # frozen levels did not move
    assert not probe.changed[2] & names("embed_tokens")  # the embeddings are the last level, not reached
    assert all(p.requires_grad for p in module.parameters())  # everything trainable again after fit
    assert [unfreezing.levels_at(0, s) for s in (0, 3)] == [1, 1]
    unfreezing.every_n_steps = 2
    assert [unfreezing.levels_at(0, s) for s in (0, 1, 2, 5, 100)] == [1, 1, 2, 3, 4]


def test_l2sp_adds_the_gradient_of_the_distance_to_the_pretrained_weights(tiny_model):
    lam = 0.3

    def run(l2sp: float):
        model = copy.deepcopy(tiny_model)
        module = SFTModule(model=lambda: model, optimizer=lambda g: torch.optim.SGD(g, lr=0.0), l2sp=l2sp)
        module.configure_model()  # theta_0 is taken here
        with torch.no_grad():  # move away from theta_0 so the penalty has a gradient
            for parameter in module.parameters():
                parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
        recorder = StepRecorder()
        trainer = fit(module, toy_examples(2), [recorder])
        return module, recorder, trainer

    plain_module, plain, _ = run(0.0)
    module, regularised, trainer = run(lam)
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    anchors = [dict(tiny_model.named_parameters())[n.removeprefix("model.")] for n in names]
    penalty = lam * l2_sp_penalty(params, anchors)
    expected = torch.autograd.grad(penalty, params)
    for name, grad in zip(names, expected):
        torch.testing.assert_close(regularised.grads[name] - plain.grads[name], grad, atol=1e-6, rtol=1e-5)
    assert math.isclose(trainer.callback_metrics["train/l2sp"].item(), penalty.item(), rel_tol=1e-5)
    assert penalty.item() > 0


def test_neftune_noises_embeddings_only_in_training(tiny_model):
    class EmbeddingProbe(L.Callback):
        """Compare what the embedding layer returns (after NEFTune's hook) with the clean lookup."""

        def __init__(self):
            self.noise = {"train": [], "val": []}

        def on_fit_start(self, trainer, pl_module):
            embeddings = pl_module.model.get_input_embeddings()

            def hook(module, args, output):
                clean = torch.nn.functional.embedding(args[0], module.weight)
                self.noise["train" if module.training else "val"].append((output - clean).abs().max().item())

            self.handle = embeddings.register_forward_hook(hook)  # runs after NEFTune's hook, sees its output

    module = SFTModule(model=lambda: tiny_model, optimizer=lambda g: torch.optim.SGD(g, lr=0.0))
    probe = EmbeddingProbe()
    examples = toy_examples(2)
    loader = DataLoader(examples, batch_size=2, collate_fn=Collator(pad_token_id=0))
    trainer = tiny_trainer(
        max_steps=2, limit_val_batches=1, val_check_interval=1, callbacks=[NEFTune(noise_alpha=5.0), probe]
    )
    trainer.fit(module, loader, loader)
    bound = 5.0 / math.sqrt(6 * tiny_model.config.hidden_size)  # alpha / sqrt(L * d)
    assert len(probe.noise["train"]) == 2 and all(0 < n <= bound for n in probe.noise["train"])
    assert probe.noise["val"] and all(n == 0 for n in probe.noise["val"])
    probe.handle.remove()
    assert not module.model.get_input_embeddings()._forward_hooks  # NEFTune's hook is gone after fit


class TwoTaskData(L.LightningDataModule):
    """Two toy examples, task ids 0 ("a") and 1 ("b"), in one batch."""

    task_names = ["a", "b"]

    def train_dataloader(self):
        examples = toy_examples(2)
        examples[1]["task_ids"] = [1] * len(examples[1]["input_ids"])
        return DataLoader(examples, batch_size=2, collate_fn=Collator(pad_token_id=0))


def test_task_loss_weights_weight_each_tasks_tokens_in_the_step_mean(tiny_model):
    weights = {"b": 3.0}
    module = SFTModule(
        model=lambda: copy.deepcopy(tiny_model),
        optimizer=lambda g: torch.optim.SGD(g, lr=0.0),
        task_loss_weights=weights,
    )
    recorder = StepRecorder()
    trainer = tiny_trainer(gradient_clip_val=None, callbacks=[recorder], max_steps=1)
    trainer.fit(module, datamodule=TwoTaskData())
    # By hand: sum over loss tokens of w(task) * loss, divided by the step's N loss tokens (not by the weights).
    batch = next(iter(TwoTaskData().train_dataloader()))
    model = module.model
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="none"
    ).view(2, -1)
    token_weight = torch.tensor([[1.0], [3.0]])
    loss = (per_token * token_weight).sum() / per_token.numel()
    loss.backward()
    for name, parameter in model.named_parameters():
        assert_close_at_scale(recorder.grads[f"model.{name}"], parameter.grad, msg=name)
    assert math.isclose(trainer.callback_metrics["train/loss"].item(), loss.item(), rel_tol=1e-5)


def test_task_loss_weights_refuse_unknown_tasks_and_negative_weights(tiny_model):
    with pytest.raises(ValueError, match="must be >= 0"):
        SFTModule(model=lambda: tiny_model, task_loss_weights={"a": -1.0})
    module = SFTModule(model=lambda: tiny_model, task_loss_weights={"clasify": 2.0})
    with pytest.raises(ValueError, match=r"does not have: \['clasify'\].*\['a', 'b'\]"):
        tiny_trainer(max_steps=1).fit(module, datamodule=TwoTaskData())

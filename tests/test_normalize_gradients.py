"""Each route of ``FineTuneModule.normalize_gradients`` (the table in its docstring) gives the gradient, or the
update, of the mean loss over all the loss tokens of an optimizer step, checked against that mean computed by
hand. The plain single-device route with gradient accumulation: ``tests/test_module.py``."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_ft.data import Collator
from lit_ft.losses import token_cross_entropy
from lit_ft.modules import FineTuneModule, SFTModule
from tests.support.helpers import assert_close_at_scale
from tests.test_batching import random_examples
from tests.test_recipes import constant_lr


def token_mean_gradients(model: torch.nn.Module, batches: list[dict]) -> dict[str, torch.Tensor]:
    """The gradient of sum(token losses over all ``batches``) / (their loss tokens), by hand, on ``model``."""
    model.zero_grad()
    total, tokens = 0.0, 0
    for batch in batches:
        per_token, mask = token_cross_entropy(model(input_ids=batch["input_ids"]).logits, batch["labels"])
        total, tokens = total + (per_token * mask).sum(), tokens + int(mask.sum())
    (total / tokens).backward()
    return {f"model.{name}": p.grad.clone() for name, p in model.named_parameters()}


def fake_trainer(strategy: SimpleNamespace, world_size: int, accumulate: int) -> SimpleNamespace:
    return SimpleNamespace(strategy=strategy, world_size=world_size, accumulate_grad_batches=accumulate)


def test_ddp_and_fsdp_gradients_become_the_token_mean_over_ranks_and_micro_batches():
    """Two ranks x two micro-batches of a linear model with a per-token squared error. After backward each rank
    holds what DDP/FSDP give: the rank average of the micro-batch gradients, each divided by ``accumulate`` by
    Lightning. The window's totals come from the fake all-reduce."""
    world, accumulate = 2, 2
    generator = torch.Generator().manual_seed(0)
    tokens = [[3, 1], [5, 2]]  # [rank][micro-batch] loss tokens
    inputs = [[torch.randn(n, 4, generator=generator) for n in row] for row in tokens]
    targets = [[torch.randn(n, generator=generator) for n in row] for row in tokens]

    module = FineTuneModule(model=lambda: torch.nn.Linear(4, 1))
    module.configure_model()
    logged = []
    module.log_step_metrics = lambda loss, optimizer: logged.append(loss)

    def summed_loss(rank: int, micro: int) -> torch.Tensor:
        return ((module.model(inputs[rank][micro]).squeeze(-1) - targets[rank][micro]) ** 2).sum()

    reference = copy.deepcopy(module.model)
    total = sum(((reference(x).squeeze(-1) - y) ** 2).sum() for xs, ys in zip(inputs, targets) for x, y in zip(xs, ys))
    (total / sum(map(sum, tokens))).backward()  # the token mean over everything, by hand

    # rank 1's window, as its all-reduce contribution
    with torch.no_grad():
        rank1 = torch.tensor([float(summed_loss(1, 0) + summed_loss(1, 1)), float(sum(tokens[1]))])
    strategy = SimpleNamespace(handles_gradient_accumulation=False, reduce=lambda t, reduce_op: t + rank1)
    module.trainer = fake_trainer(strategy, world, accumulate)
    ddp_average = sum(summed_loss(r, m) / accumulate for r in range(world) for m in range(accumulate)) / world
    ddp_average.backward()  # the gradients DDP/FSDP leave on every rank
    for micro in range(accumulate):  # rank 0's micro-batches fill its window; each back-propagates its sum
        loss = summed_loss(0, micro).detach()
        assert torch.equal(module.loss_to_backward(loss, torch.tensor(tokens[0][micro])), loss)

    assert module.normalize_gradients(optimizer=None) == 11
    for (name, parameter), expected in zip(module.model.named_parameters(), reference.parameters()):
        assert_close_at_scale(parameter.grad, expected.grad, msg=name)
    assert logged == [pytest.approx(float(total) / 11, rel=1e-6)]
    assert float(module._window_loss) == 0 and float(module._window_units) == 0  # the next window starts empty


@pytest.mark.parametrize("accumulate", [1, 2])
def test_deepspeed_scales_each_loss_before_backward_and_leaves_the_gradients(accumulate):
    """DeepSpeed's engine owns the gradients: 2 ranks, whose engine averages over ranks and (with Lightning's
    closure) divides each micro-batch loss by ``accumulate`` twice. Without accumulation the objective is the
    token mean over all ranks; with it, the mean over micro-batches of each one's token mean over all ranks."""
    world = 2
    sums = torch.tensor([[30.0, 8.0], [10.0, 12.0]])[:, :accumulate]  # [rank, micro-batch] summed token losses
    counts = torch.tensor([[5.0, 2.0], [3.0, 6.0]])[:, :accumulate]  # [rank, micro-batch] loss tokens
    modules = []
    for _ in range(world):
        module = SFTModule(model=lambda: None)
        module.trainer = fake_trainer(SimpleNamespace(handles_gradient_accumulation=True), world, accumulate)
        modules.append(module)
    objective = 0.0
    for micro in range(accumulate):
        for rank, module in enumerate(modules):
            module.trainer.strategy.reduce = lambda t, reduce_op, m=micro: counts[:, m].sum()  # all_reduce(sum)
            loss = module.loss_to_backward(sums[rank, micro], counts[rank, micro])
            objective += loss / accumulate / accumulate / world  # closure, engine, rank average
    expected = (sums / counts.sum(0)).sum(0).mean()  # per micro-batch: all ranks' sums / all ranks' tokens
    assert objective.item() == pytest.approx(expected.item())
    if accumulate == 1:
        assert objective.item() == pytest.approx(40 / 8)  # (30 + 10) / (5 + 3): the exact token mean

    # normalize_gradients then has nothing to scale: the engine's gradients are left alone
    module = modules[0]
    module.model = torch.nn.Linear(2, 1)
    module.model.weight.grad = torch.ones(1, 2)
    module.trainer.strategy.reduce = lambda t, reduce_op: t
    module.log_step_metrics = lambda loss, optimizer: None
    module.normalize_gradients(optimizer=None)
    assert torch.equal(module.model.weight.grad, torch.ones(1, 2))


def test_optimizer_in_backward_updates_with_the_token_mean_gradient(tokenizer, tiny_model, tiny_trainer):
    """One SGD step (lr 1) fused into backward: the update is minus the token-mean gradient of the batch."""
    batch = Collator(tokenizer.pad_token_id)(random_examples([12, 7], seed=2))
    expected = token_mean_gradients(copy.deepcopy(tiny_model), [batch])
    before = {f"model.{n}": p.detach().clone() for n, p in tiny_model.named_parameters()}
    module = SFTModule(
        model=lambda: tiny_model,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=1.0),
        scheduler=constant_lr,
        optimizer_in_backward=True,
    )
    loader = DataLoader(random_examples([12, 7], seed=2), batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    tiny_trainer(max_steps=1, gradient_clip_val=None).fit(module, loader)
    for name, parameter in module.named_parameters():
        torch.testing.assert_close(before[name] - parameter.detach(), expected[name], atol=1e-6, rtol=1e-4, msg=name)
    assert module.train_loss_tokens == int((batch["labels"][:, 1:] != -100).sum())


class DropFirstStep(L.Callback):
    """Drops optimizer step 1 as a DivergenceGuard does (gradients to None, ``step_dropped`` recorded), and records
    the gradients every ``on_before_optimizer_step`` hook sees. Listed first: before the guard, if there is one."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seen.append({n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None})
        if trainer.global_step == 0:
            optimizer.zero_grad(set_to_none=True)
            pl_module.step_dropped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def test_a_dropped_step_changes_nothing_and_its_tokens_are_not_trained_on(tokenizer, tiny_model, tiny_trainer):
    examples = random_examples([9, 14, 6, 11], seed=4)
    loader = DataLoader(examples, batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    batches = list(loader)
    initial = copy.deepcopy(tiny_model)
    module = SFTModule(
        model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1), scheduler=constant_lr
    )
    drop = DropFirstStep()
    tiny_trainer(max_steps=2, gradient_clip_val=None, callbacks=[drop]).fit(module, loader)

    # The hooks already see the token mean (normalize_gradients runs before all of them, whatever their order).
    for seen, batch in zip(drop.seen, batches):  # step 2 starts from the initial weights: step 1 was dropped
        expected = token_mean_gradients(copy.deepcopy(initial), [batch])
        for name, grad in seen.items():
            assert_close_at_scale(grad, expected[name], msg=name)
    initial_weights = {f"model.{n}": p for n, p in initial.named_parameters()}
    assert all(torch.equal(w, initial_weights[n]) for n, w in drop.weights[0].items())  # step 1: no update
    assert any(not torch.equal(w, initial_weights[n]) for n, w in drop.weights[1].items())  # step 2 trained
    assert module.train_loss_tokens == int((batches[1]["labels"][:, 1:] != -100).sum())  # step 2's tokens only

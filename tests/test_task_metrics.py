"""Per-task-type loss from the step outputs: hand computations, packing, gradient accumulation, DDP."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch.utils.data import DataLoader

from lit_ft.callbacks import TaskMetrics
from lit_ft.data import Collator
from lit_ft.data.batch import example_task_ids, non_padding_tokens
from lit_ft.losses import token_cross_entropy
from lit_ft.models import tiny_llama
from lit_ft.modules import SFTModule
from tests.support.helpers import tiny_trainer

PAD = 2


def padded_batch() -> dict[str, torch.Tensor]:
    """Two rows: an example of task 0 (5 tokens, 3 with loss) and one of task 1 (3 tokens, 2 with loss)."""
    examples = [
        {"input_ids": [11, 12, 13, 14, 15], "labels": [-100, -100, 13, 14, 15], "task_ids": [0] * 5},
        {"input_ids": [21, 22, 23], "labels": [-100, 22, 23], "task_ids": [1] * 3},
    ]
    return Collator(PAD)(examples)


def packed_batch() -> dict[str, torch.Tensor]:
    """One row packing task 1 (4 tokens, 3 with loss), task 0 (3 tokens, 1 with loss), then 2 padding tokens."""
    return {
        "input_ids": torch.tensor([[31, 32, 33, 34, 41, 42, 43, PAD, PAD]]),
        "labels": torch.tensor([[-100, 32, 33, 34, -100, -100, 43, -100, -100]]),
        "task_ids": torch.tensor([[1, 1, 1, 1, 0, 0, 0, -1, -1]]),
        "position_ids": torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1]]),
    }


def test_batch_counts_follow_the_batch_contract():
    padded, packed = padded_batch(), packed_batch()
    assert int(non_padding_tokens(padded)) == 8 and int(non_padding_tokens(packed)) == 7
    assert example_task_ids(padded).tolist() == [0, 1]
    assert example_task_ids(packed).tolist() == [1, 0]  # the padding run (task -1) is not an example
    # shared-prompt branches (positions jumping back into the trunk) are examples of their own, as in a padded batch
    branched = {
        "task_ids": torch.tensor([[2, 2, 2, 2, 2, 2, 0, 0]]),
        "position_ids": torch.tensor([[0, 1, 2, 3, 2, 3, 0, 1]]),
    }
    assert example_task_ids(branched).tolist() == [2, 2, 0]


def test_known_step_outputs_give_hand_computed_task_means():
    callback = TaskMetrics(task_names=["a", "b"])
    batch = packed_batch()
    # per_token_loss / loss_mask / task_ids as a module returns them: [B, T-1], aligned with the shifted targets
    outputs = {
        "per_token_loss": torch.tensor([[1.0, 2.0, 3.0, 0.0, 0.0, 6.0, 0.0, 0.0]]),
        "loss_mask": torch.tensor([[True, True, True, False, False, True, False, False]]),
        "task_ids": batch["task_ids"][:, 1:],
    }
    callback.on_validation_batch_end(None, None, outputs, batch, 0)
    second = padded_batch()
    callback.on_validation_batch_end(
        None,
        None,
        {
            "per_token_loss": torch.tensor([[0.0, 4.0, 5.0, 7.0], [0.5, 1.5, 0.0, 0.0]]),
            "loss_mask": torch.tensor([[False, True, True, True], [True, True, False, False]]),
            "task_ids": second["task_ids"][:, 1:],
        },
        second,
        0,
    )
    values = callback.compute("val")
    # task a: 6 (packed) + 4, 5, 7 (padded row 0); task b: 1, 2, 3 (packed) + 0.5, 1.5 (padded row 1)
    assert values["val/loss/a"] == pytest.approx((6 + 4 + 5 + 7) / 4)
    assert values["val/loss/b"] == pytest.approx((1 + 2 + 3 + 0.5 + 1.5) / 5)
    assert values["val/tokens/a"] == 4 and values["val/tokens/b"] == 5
    assert values["val/examples/a"] == 2 and values["val/examples/b"] == 2


def test_a_single_task_type_is_reported_too():
    callback = TaskMetrics(task_names=["default"])
    batch = Collator(PAD)([{"input_ids": [11, 12, 13], "labels": [-100, 12, 13], "task_ids": [0] * 3}])
    outputs = {
        "per_token_loss": torch.tensor([[1.0, 3.0]]),
        "loss_mask": torch.tensor([[True, True]]),
        "task_ids": batch["task_ids"][:, 1:],
    }
    callback.on_validation_batch_end(None, None, outputs, batch, 0)
    assert callback.compute("val") == {"val/loss/default": 2.0, "val/tokens/default": 2.0, "val/examples/default": 1.0}


def test_per_example_metrics_of_preference_modules_are_split_too():
    callback = TaskMetrics(task_names=["a", "b"])
    outputs = {
        "example_metrics": {"rewards/accuracies": torch.tensor([1.0, 0.0, 1.0])},
        "example_task_ids": torch.tensor([0, 0, 1]),
    }
    callback.on_validation_batch_end(None, None, outputs, {}, 0)
    values = callback.compute("val")
    assert values == {
        "val/examples/a": 2.0,
        "val/examples/b": 1.0,
        "val/rewards/accuracies/a": 0.5,
        "val/rewards/accuracies/b": 1.0,
    }
    callback.after = values
    assert callback.summary()["per_task"]["a"] == {"val_rewards/accuracies_after": 0.5, "val_examples": 2.0}


def reference_task_means(model: torch.nn.Module, batches: list[dict]) -> dict[str, float]:
    """Token-weighted loss per task computed directly, token by token."""
    sums, counts = {0: 0.0, 1: 0.0}, {0: 0, 1: 0}
    with torch.no_grad():
        for batch in batches:
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"),
            ).logits
            per_token, mask = token_cross_entropy(logits, batch["labels"])
            tasks = batch["task_ids"][:, 1:]
            for b in range(per_token.shape[0]):
                for t in range(per_token.shape[1]):
                    if mask[b, t]:
                        sums[int(tasks[b, t])] += float(per_token[b, t])
                        counts[int(tasks[b, t])] += 1
    return {"a": sums[0] / counts[0], "b": sums[1] / counts[1], "tokens_a": counts[0], "tokens_b": counts[1]}


def test_training_window_spans_the_accumulated_micro_batches_and_validation_the_epoch(tokenizer, tiny_model):
    batches = [padded_batch(), packed_batch()]
    expected = reference_task_means(copy.deepcopy(tiny_model).eval(), batches)
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    trainer = tiny_trainer(max_steps=1, accumulate_grad_batches=2, callbacks=[TaskMetrics(task_names=["a", "b"])])
    loader = DataLoader(batches, batch_size=None)
    trainer.fit(module, loader)
    metrics = trainer.callback_metrics
    assert metrics["train/loss/a"].item() == pytest.approx(expected["a"], rel=1e-5)
    assert metrics["train/loss/b"].item() == pytest.approx(expected["b"], rel=1e-5)
    assert metrics["train/tokens/a"].item() == expected["tokens_a"] == 4
    assert metrics["train/examples/a"].item() == 2 and metrics["train/examples/b"].item() == 2
    # the window mean is the module's train/loss split by task: weighting the parts gives the whole back
    whole = (expected["a"] * 4 + expected["b"] * 5) / 9
    assert metrics["train/loss"].item() == pytest.approx(whole, rel=1e-5)

    results = trainer.validate(module, loader, verbose=False)[0]
    assert results["val/loss/a"] == pytest.approx(expected["a"], rel=1e-5)
    assert results["val/loss/b"] == pytest.approx(expected["b"], rel=1e-5)
    assert results["val/loss"] == pytest.approx(whole, rel=1e-5)


# --- the same numbers from two processes -------------------------------------------------------------------
def ddp_examples() -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    examples = []
    for i in range(8):
        length = 6 + i % 3
        ids = torch.randint(5, 400, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:], "task_ids": [i % 2] * length})
    return examples


def per_task_metrics(tokenizer, devices: int) -> dict[str, float]:
    """One epoch at learning rate 0 over the 8 examples (batch 2 per process) and a validation over them."""
    loader = DataLoader(ddp_examples(), batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    module = SFTModule(
        model=functools.partial(tiny_llama, tokenizer, seed=0),
        optimizer=functools.partial(torch.optim.SGD, lr=0.0),
    )
    steps = 8 // (2 * devices)
    trainer = tiny_trainer(
        max_epochs=1,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        log_every_n_steps=steps,  # one training window = the whole epoch
        callbacks=[TaskMetrics(task_names=["even", "odd"])],
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k and k.count("/") == 2}


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tokenizer):
    single = per_task_metrics(tokenizer, devices=1)
    double = per_task_metrics(tokenizer, devices=2)
    expected = {
        f"{stage}/{name}/{task}"
        for stage in ("train", "val")
        for name in ("loss", "tokens", "examples")
        for task in ("even", "odd")
    }
    assert expected <= set(single)
    assert set(single) == set(double)
    for name, value in single.items():
        assert math.isclose(double[name], value, rel_tol=1e-5), (name, value, double[name])
    assert single["val/examples/even"] == 4 and single["train/examples/odd"] == 4

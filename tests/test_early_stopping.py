"""Early stopping ends on the weights of the best validation check, for full and LoRA fine-tuning."""

from __future__ import annotations

import types

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from lit_ft.callbacks import EarlyStoppingWithRestore
from lit_ft.callbacks.history import MetricHistory
from lit_ft.callbacks.steps import weights_step
from lit_ft.data import Collator
from lit_ft.models import LoRA, tiny_llama
from lit_ft.modules import SFTModule
from lit_ft.utils.distributed import trainable_state
from tests.support.helpers import tiny_trainer

# val/loss falls to its minimum at the third check, then rises
SCRIPTED_VAL_LOSS = [3.0, 2.0, 1.0, 1.5, 2.0, 2.5]


class ScriptedValLoss(SFTModule):
    """Trains for real, but reports the scripted validation loss (a forced rise after a minimum)."""

    checks = 0

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", SCRIPTED_VAL_LOSS[self.checks])
        self.checks += 1


class WeightsAtChecks(L.Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.weights.append({n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad})


def train_with_scripted_loss(tokenizer, patience: int, adapter=None):
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(4):
        ids = torch.randint(5, 500, (10,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:], "task_ids": [0] * 10})
    loader = DataLoader(examples, batch_size=4, collate_fn=Collator(tokenizer.pad_token_id))
    module = ScriptedValLoss(
        model=lambda: tiny_llama(tokenizer, seed=0),
        adapter=adapter,
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-2),
    )
    stopper = EarlyStoppingWithRestore(monitor="val/loss", mode="min", patience=patience)
    recorder = WeightsAtChecks()
    trainer = tiny_trainer(max_epochs=len(SCRIPTED_VAL_LOSS), num_sanity_val_steps=0, callbacks=[recorder, stopper])
    trainer.fit(module, loader, loader)
    return module, stopper, recorder, trainer


def assert_weights_equal(module, expected: dict[str, torch.Tensor]) -> None:
    parameters = dict(module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(parameters[name].detach(), value, rtol=0, atol=0)


@pytest.mark.parametrize("patience", [2, 10])
def test_training_ends_on_the_best_check_whether_it_stops_early_or_not(tokenizer, patience):
    module, stopper, recorder, trainer = train_with_scripted_loss(tokenizer, patience)
    checks = 5 if patience == 2 else 6  # patience 2: stops after two checks without improvement (1.5, 2.0)
    assert len(recorder.weights) == checks and trainer.global_step == checks
    best, last = recorder.weights[2], recorder.weights[-1]
    assert any(not torch.equal(best[name], last[name]) for name in best)  # training moved on after the best check
    assert_weights_equal(module, best)  # the weights of the check with val/loss 1.0
    summary = stopper.summary()["early_stopping"]
    assert summary["best_score"] == 1.0 and summary["best_step"] == 3 and summary["restored_best"]
    assert summary["stopped_early"] == (patience == 2)
    assert summary["stopped_step"] == (5 if patience == 2 else None)
    assert weights_step(trainer) == 3  # what checks after training label their results with

    resumed = EarlyStoppingWithRestore(monitor="val/loss")  # the best weights travel in the checkpoint
    resumed.load_state_dict(stopper.state_dict())
    assert resumed.best_step == 3 and float(resumed.best_score) == 1.0
    for name, value in resumed.best_state.items():
        assert torch.equal(value, best[name])


def test_validation_of_the_restored_weights_is_recorded_at_their_step(tokenizer):
    module = SFTModule(model=lambda: tiny_llama(tokenizer, seed=0))
    trainer = types.SimpleNamespace(sanity_checking=False, global_step=5, lightning_module=module, callback_metrics={})
    history = MetricHistory()
    for step, loss in [(0, 3.0), (2, 2.0), (4, 1.0), (6, 1.5)]:  # checks during training
        trainer.global_step, trainer.callback_metrics = step, {"val/loss": torch.tensor(loss)}
        history.on_validation_end(trainer, None)
    trainer.global_step = 7  # training ran on, then the best check's weights (step 4) were restored
    module.restored_step = 4  # as EarlyStoppingWithRestore records it
    trainer.callback_metrics = {"val/loss": torch.tensor(1.0)}
    history.on_validation_end(trainer, None)  # the validation after training
    assert history.val["val/loss"] == [(0, 3.0), (2, 2.0), (4, 1.0), (6, 1.5)]  # one point per set of weights


def test_the_best_weights_include_layers_frozen_for_a_while(tokenizer):
    module = SFTModule(model=lambda: tiny_llama(tokenizer, seed=0))
    module.configure_model()
    bottom = [p for n, p in module.named_parameters() if ".layers.0." in n]
    for parameter in bottom:  # what gradual unfreezing does to the lower levels at the start
        parameter.requires_grad_(False)
    state = trainable_state(module)
    assert len(state) == len(list(module.parameters()))  # the frozen-for-now layer is copied too


def test_lora_keeps_only_adapter_weights_and_exports_the_best_adapter(tokenizer, tmp_path):
    module, stopper, recorder, _ = train_with_scripted_loss(tokenizer, 2, adapter=LoRA(r=4, alpha=8, dropout=0.0))
    assert stopper.best_state and all("lora_" in name for name in stopper.best_state)
    assert sum(v.numel() for v in stopper.best_state.values()) < 0.1 * sum(p.numel() for p in module.parameters())
    assert_weights_equal(module, recorder.weights[2])
    paths = module.export(tmp_path, tokenizer)
    saved = load_file(f"{paths['adapter_path']}/adapter_model.safetensors")
    best = {name.removeprefix("model."): value for name, value in recorder.weights[2].items()}
    assert len(saved) == len(best)
    for name, value in saved.items():  # peft saves "base_model.model....lora_A.weight" without the adapter name
        torch.testing.assert_close(value, best[name.replace(".weight", ".default.weight")], rtol=0, atol=0)

"""LoRA, DoRA, rsLoRA and frozen-backbone fine-tuning; adapter export, merge and resume; QLoRA's CPU error."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from peft import PeftModel
from torch.utils.data import DataLoader

from lit_ft.data import Collator
from lit_ft.models import Freeze, LoRA, load_model
from lit_ft.models.loading import nf4_quantization_config
from lit_ft.modules import SFTModule
from tests.support.helpers import tiny_trainer

LINEAR_NAMES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_only_adapter_weights_require_grad(tiny_model):
    model = LoRA(r=4, alpha=8)(tiny_model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    adapted = {n.split(".")[-2] for n, _ in model.named_modules() if n.endswith("lora_A")}
    assert {n.rsplit(".", 1)[-1] for n in adapted} == LINEAR_NAMES  # all-linear: every projection, not lm_head


def test_rank_alpha_targets_reach_peft(tiny_model):
    model = LoRA(r=8, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])(tiny_model)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (8, 4, {"q_proj", "v_proj"})
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.shape == (8, 64) and layer.scaling["default"] == 4 / 8
    assert not hasattr(model.base_model.model.model.layers[0].self_attn.k_proj, "lora_A")


def test_rslora_and_dora_build(tiny_model):
    rs = LoRA(r=16, alpha=8, use_rslora=True)(copy.deepcopy(tiny_model))
    assert rs.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8 / 16**0.5)
    dora = LoRA(r=4, use_dora=True)(tiny_model)
    assert any("lora_magnitude_vector" in n and p.requires_grad for n, p in dora.named_parameters())


def test_merged_logits_equal_adapter_logits_and_saved_adapter_reloads(tiny_model, tmp_path, tokenizer):
    base = copy.deepcopy(tiny_model)
    model = LoRA(r=4, alpha=8, dropout=0.0)(tiny_model).eval()
    with torch.no_grad():  # give B non-zero values, as training would
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    ids = torch.randint(5, 1000, (2, 9))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        assert not torch.allclose(adapted, base(input_ids=ids).logits, atol=1e-4)
        model.save_pretrained(tmp_path / "adapter")
        reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter").eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)
        merged = model.merge_and_unload()
        assert not isinstance(merged, PeftModel)
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-4, rtol=1e-4)


def test_init_from_continues_an_existing_adapter(tiny_model, tmp_path):
    first = LoRA(r=4)(copy.deepcopy(tiny_model))
    with torch.no_grad():
        first.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight.fill_(0.5)
    first.save_pretrained(tmp_path / "adapter")
    second = LoRA(init_from=str(tmp_path / "adapter"))(tiny_model)
    weight = second.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert weight.requires_grad and torch.all(weight == 0.5)


def test_freeze_trains_only_top_layers_and_head(tiny_model):
    model = Freeze(train_last_layers=1, train_lm_head=False)(tiny_model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in trainable)
    head_only = Freeze(train_last_layers=0, train_lm_head=True, train_final_norm=False)(model)
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {"model.embed_tokens.weight"}  # tied
    with pytest.raises(ValueError, match="nothing to train"):
        Freeze()(model)


def test_qlora_configuration_and_clear_error_without_cuda():
    config = nf4_quantization_config()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error is for CPU-only machines")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*peft=lora"):
        load_model("smollm2-135m-instruct", quantization="nf4")


def lora_examples(n: int = 12) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(n):
        ids = torch.randint(5, 500, (10,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:], "task_ids": [0] * 10})
    return examples


def make_trainer(tmp_path, max_steps: int, callbacks=()) -> L.Trainer:
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    return tiny_trainer(max_steps=max_steps, enable_checkpointing=True, callbacks=[checkpoint, *callbacks])


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(round(trainer.callback_metrics["train/loss"].item(), 6))


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_lora_checkpoint_is_small_and_resumes_the_same_loss_curve(tokenizer, tmp_path):
    from lit_ft.models import tiny_llama

    def module():
        return SFTModule(
            model=lambda: tiny_llama(tokenizer, seed=0),
            adapter=LoRA(r=4, alpha=8, dropout=0.0),
            optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-2),
        )

    # Every batch holds the same examples, so this checks what the LoRA checkpoint restores (adapter weights,
    # optimizer and schedule) independently of data position (exact mid-epoch data resume: test_resume.py).
    loader = DataLoader(lora_examples(2) * 3, batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    L.seed_everything(0)
    full = LossRecorder()
    make_trainer(tmp_path / "a", 6, [full]).fit(module(), loader)

    L.seed_everything(0)
    stopped = make_trainer(tmp_path / "b", 6, [StopAfterFirstEpoch()])
    stopped.fit(module(), loader)
    stopped.save_checkpoint(tmp_path / "b" / "ckpt" / "last.ckpt")  # after the epoch is complete
    state = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in key for key in state)  # frozen base weights are not in the checkpoint
    resumed = LossRecorder()
    make_trainer(tmp_path / "b", 6, [resumed]).fit(
        module(), loader, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt")
    )
    assert resumed.losses == full.losses[3:]

"""The real embedded SmolLM2-135M-Instruct: offline loading, chat answers and one training step."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lit_ft.data import Collator, tokenize_conversation
from lit_ft.models import load_model, resolve_model_path
from lit_ft.modules import SFTModule


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct")


def test_embedded_alias_resolves_to_a_plain_safetensors_folder(smollm2):
    folder = resolve_model_path("smollm2-135m-instruct")
    assert folder.endswith("smollm2-135m-instruct")
    assert sum(p.numel() for p in smollm2.parameters()) == 134_515_008
    assert getattr(smollm2, "hf_quantizer", None) is None and not hasattr(smollm2.config, "quantization_config")


def test_embedded_model_answers_a_question(smollm2, tokenizer):
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = smollm2.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


def test_one_real_training_step_updates_weights(smollm2, tokenizer, tiny_trainer):
    messages = [
        {"role": "user", "content": "Classify: The Tenant shall pay rent monthly."},
        {"role": "assistant", "content": "TYPE: payment"},
    ]
    example = tokenize_conversation(tokenizer, messages)
    example["task_ids"] = [0] * len(example["input_ids"])
    loader = DataLoader([example, example], batch_size=2, collate_fn=Collator(tokenizer.pad_token_id))
    before = smollm2.model.layers[0].mlp.down_proj.weight.detach().clone()
    module = SFTModule(model=lambda: smollm2, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-4))
    trainer = tiny_trainer(max_steps=1)
    trainer.fit(module, loader)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not torch.equal(before, smollm2.model.layers[0].mlp.down_proj.weight)


def test_unknown_model_gives_a_clear_offline_error():
    with pytest.raises(OSError, match="not an embedded alias"):
        load_model("no-such-org/no-such-model-xyz")

"""Exports that travel: the base named as users know it, inference settings, and a model card with the run's facts."""

from __future__ import annotations

import json
import re
from functools import partial

import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lit_ft.model_card import hyperparameters, write_model_cards
from lit_ft.models import LoRA, load_model, model_name, resolve_model_path, tiny_llama
from lit_ft.modules import SFTModule
from lit_ft.run import train
from tests.conftest import arithmetic_rows, write_jsonl
from tests.support.helpers import compose_config

ALIAS = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def lora_export(tmp_path_factory, tokenizer):
    """A tiny LoRA run on a base saved as a local folder (model=hf), with per-task loss and the forgetting check."""
    folder = tmp_path_factory.mktemp("card")
    base = folder / "base"
    tiny_llama(tokenizer, seed=3).save_pretrained(base)
    tokenizer.save_pretrained(base)
    rows = arithmetic_rows(24)
    train_file, val_file = write_jsonl(folder / "train.jsonl", rows[:16]), write_jsonl(folder / "val.jsonl", rows[16:])
    cfg = compose_config(
        [
            "model=hf",
            f"model.name_or_path={base}",
            "peft=lora",
            "peft.r=4",
            "peft.alpha=8",
            "peft.dropout=0.0",
            "logger=none",
            "callbacks=[default,forgetting]",
            "callbacks.progress_bar=null",
            "callbacks.forgetting.max_questions=4",
            "callbacks.forgetting.max_passages=1",
            "+trainer.enable_progress_bar=false",
            "trainer.max_steps=3",
            "module.optimizer.lr=1e-2",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
        ],
        output_dir=folder / "run",
    )
    train(cfg)
    run = folder / "run"
    return {"base": base, "run": run, "summary": json.loads((run / "summary.json").read_text())}


def card_rows(text: str) -> dict[str, list[str]]:
    """The cells of every markdown table row of a card, by first cell."""
    rows = (line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("| "))
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_adapter_names_its_base_as_given_and_exports_are_ready_for_inference(lora_export):
    adapter, model = lora_export["run"] / "adapter", lora_export["run"] / "model"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(lora_export["base"])
    assert lora_export["summary"]["base_model"] == str(lora_export["base"])
    assert json.loads((model / "config.json").read_text())["use_cache"] is True  # training ran with it off
    assert json.loads((model / "generation_config.json").read_text())["use_cache"] is True


def test_adapter_on_its_named_base_gives_the_merged_models_logits(lora_export):
    adapter_config = json.loads((lora_export["run"] / "adapter" / "adapter_config.json").read_text())
    base = load_model(adapter_config["base_model_name_or_path"]).eval()
    ids = torch.randint(5, 1000, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, lora_export["run"] / "adapter").eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(lora_export["run"] / "model").eval()(input_ids=ids).logits
    assert (adapted - before).abs().max() > 1e-2  # training moved the adapter
    torch.testing.assert_close(adapted, merged, atol=1e-4, rtol=1e-4)


def test_cards_carry_front_matter_hyperparameters_and_the_summarys_numbers(lora_export):
    summary = lora_export["summary"]
    adapter_card = ModelCard.load(lora_export["run"] / "adapter" / "README.md")
    model_card = ModelCard.load(lora_export["run"] / "model" / "README.md")
    assert adapter_card.data.base_model == model_card.data.base_model == str(lora_export["base"])
    assert (adapter_card.data.library_name, model_card.data.library_name) == ("peft", "transformers")
    assert {"lit-ft", "sft", "lora"} <= set(adapter_card.data.tags)
    assert adapter_card.data.pipeline_tag == "text-generation"

    rows = card_rows(adapter_card.text)
    assert rows["method"] == ["LoRA: r 4, alpha 8, dropout 0.0, targets all-linear"]
    assert rows["optimizer"] == ["AdamW, lr 0.01, weight decay 0.0, gradient clipping 1.0"]
    assert rows["schedule"] == ["cosine (warmup 0.05, min_lr_ratio 0.1)"]
    assert rows["batch"] == ["4 examples x 1 accumulation x 1 device(s) x 1 node(s), padding-free"]
    assert rows["steps"] == ["3 optimizer steps, 1 epoch(s) (limits: max_epochs 1, max_steps 3)"]
    assert rows["max_length"] == ["256 tokens (truncation right)"]
    assert rows["precision"] == ["32-true on cpu"]
    train_stats = summary["data"]["train"]
    assert rows["train"][1:] == [
        str(train_stats["examples"]),
        str(train_stats["tokens"]),
        str(train_stats["loss_tokens"]),
    ]
    assert rows["train"][0].endswith("train.jsonl`") and rows["val"][0].endswith("val.jsonl`")

    expected = {name: (summary["val_before"][name], summary["val_after"][name]) for name in summary["val_after"]}
    forgetting = summary["forgetting"]
    expected["forgetting/mcq_acc"] = (forgetting["baseline"]["mcq_acc"], forgetting["final"]["mcq_acc"])
    for name in ("val/loss", "val/loss/add", "val/loss/sum", "forgetting/mcq_acc"):
        before, after, change = (float(cell) for cell in rows[name])
        assert (before, after) == pytest.approx(expected[name], abs=5e-5)  # printed to 4 decimals
        assert change == pytest.approx(expected[name][1] - expected[name][0], abs=5e-5)
    assert model_card.text.count("| val/loss |") == 1 and "AutoModelForCausalLM.from_pretrained" in model_card.text


def test_model_name_is_the_alias_hub_id_or_the_folder_from_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "logs" / "run" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert model_name("SmolLM2-135M-Instruct") == ALIAS
    assert model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_name(tmp_path / "logs" / "run" / "model") == "logs/run/model"  # dpo_legal's absolute log path
    assert model_name("/elsewhere/model") == "/elsewhere/model"


def test_embedded_adapter_names_the_alias_and_its_card_says_how_to_load_it(tmp_path, tokenizer):
    """The real embedded model: the adapter points at the alias (not this machine's cache folder), loads onto
    ``load_model(alias)`` with the logits of the merged export, and the card explains the alias."""
    module = SFTModule(model=partial(load_model, ALIAS), adapter=LoRA(r=2, dropout=0.0, target_modules=["q_proj"]))
    module.configure_model()
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    paths = module.export(tmp_path, tokenizer)
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == paths["base_model"] == ALIAS
    assert resolve_model_path(ALIAS) not in (tmp_path / "adapter" / "adapter_config.json").read_text()

    ids = torch.randint(5, 1000, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        adapter = PeftModel.from_pretrained(load_model(ALIAS), tmp_path / "adapter").eval()
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
        torch.testing.assert_close(adapter(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4, rtol=1e-4)

    cfg = compose_config(["experiment=lora_legal"], output_dir=tmp_path)
    summary = {"experiment": "lora_legal", **paths, "val_before": {"val/loss": 4.5}, "val_after": {"val/loss": 1.8}}
    assert write_model_cards(summary, cfg) == [tmp_path / "model" / "README.md", tmp_path / "adapter" / "README.md"]
    card = ModelCard.load(tmp_path / "adapter" / "README.md")
    assert card.data.base_model == ALIAS and card.data.library_name == "peft"
    assert f'PeftModel.from_pretrained(load_model("{ALIAS}"), "{tmp_path / "adapter"}")' in card.text
    assert "cannot resolve the alias" in card.text and "HuggingFaceTB/SmolLM2-135M-Instruct" in card.text
    assert re.search(r"\| train \| `data/legal/train.jsonl` \|", card.text)  # shown from the project folder


def test_the_objective_row_names_the_forgetting_regularisers():
    cfg = compose_config(["model=tiny", "module.l2sp=0.01", "ewc=general", "mixout=default"])
    rows = dict(hyperparameters({}, cfg))
    assert rows["objective"] == "SFTModule (l2sp 0.01, ewc.strength 10000.0, mixout.p 0.1)"


@pytest.mark.parametrize(
    ("overrides", "layout"),
    [
        ([], "shared-prompt"),  # the default with the CPU's attention
        (["data.shared_prompt=false"], "padding-free"),
        (["data.shared_prompt=false", "data.padding_free=false"], "padded"),
        (
            ["data.padding_free=false", "data.shared_prompt=true"],
            "shared-prompt",
        ),  # the shared layout is one row anyway
    ],
)
def test_the_batch_row_names_the_preference_layout(overrides, layout):
    rows = dict(hyperparameters({}, compose_config(["experiment=dpo_legal", *overrides])))
    assert rows["batch"].endswith(f"x 1 node(s), {layout}")

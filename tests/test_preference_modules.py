"""Reward-model and DPO modules on a tiny model: step-zero values, reference strategies, reductions, export."""

from __future__ import annotations

import json
import math
import re
import types

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lit_ft.data import PairCollator, PreferenceDataModule
from lit_ft.losses import completion_logps, orpo_loss, reward_loss, simpo_loss, token_cross_entropy
from lit_ft.models import SDPA_VARLEN, LoRA, tiny_llama
from lit_ft.modules import DPOModule, RewardModelModule
from lit_ft.run import train
from tests.conftest import write_jsonl
from tests.support.helpers import assert_close_at_scale, compose_config, run_entry_point
from tests.test_module import GradCapture


def toy_pairs(count: int, seed: int) -> list[dict]:
    """'What is a plus b?': the chosen answer is the sum in notation, the rejected one hedges."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        a, b = (int(x) for x in torch.randint(1, 30, (2,), generator=generator))
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
                "chosen": f"SUM: {a + b}",
                "rejected": f"I am not sure, maybe {a + b + i % 3 + 1}.",
                "task_type": "add" if i % 2 else "sum",
                **({"margin": 0.5} if i % 5 == 0 else {}),
            }
        )
    return rows


@pytest.fixture
def pair_files(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", toy_pairs(16, 0)), write_jsonl(tmp_path / "val.jsonl", toy_pairs(8, 1))


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory, tokenizer):
    """8 training and 4 validation pairs: two training batches and one validation batch."""
    folder = tmp_path_factory.mktemp("pairs")
    files = write_jsonl(folder / "train.jsonl", toy_pairs(8, 0)), write_jsonl(folder / "val.jsonl", toy_pairs(4, 1))
    dm = PreferenceDataModule(tokenizer, *files, batch_size=4, eval_batch_size=4)
    dm.setup("fit")
    return dm


def dpo(tokenizer, reference: str = "precomputed", lr: float = 0.0, **kwargs) -> DPOModule:
    return DPOModule(
        model=lambda: tiny_llama(tokenizer, seed=0),
        adapter=LoRA(r=4, alpha=8, dropout=0.0),
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=lr),
        reference=reference,
        **kwargs,
    )


def val_batch(datamodule) -> dict[str, torch.Tensor]:
    return next(iter(datamodule.val_dataloader()))


@pytest.mark.parametrize("reference", ["precomputed", "adapter", "copy"])
def test_dpo_at_step_zero_is_log_2_with_zero_rewards(tokenizer, datamodule, reference, tiny_trainer):
    metrics = tiny_trainer().validate(dpo(tokenizer, reference), datamodule=datamodule, verbose=False)[0]
    assert metrics["val/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["val/rewards/accuracies"] == 0.0 and metrics["val/rewards/margins"] == pytest.approx(0, abs=1e-6)
    assert metrics["val/logps/chosen"] < 0 and metrics["val/logps/rejected"] < metrics["val/logps/chosen"] * 0.5


def step_outputs(module: DPOModule, batch) -> dict[str, torch.Tensor]:
    module.configure_model()
    module.model.eval()
    with torch.no_grad():
        return module.pair_losses(batch, "val")


def test_step_outputs_carry_per_pair_metrics_and_task_ids(tokenizer, datamodule):
    module = dpo(tokenizer, "adapter")
    module.configure_model()
    module.model.eval()
    with torch.no_grad():
        out = module.validation_step(val_batch(datamodule), 0)
    pairs = datamodule.val_examples[:4]
    assert out["example_task_ids"].tolist() == [datamodule.task_names.index(p["task_type"]) for p in pairs]
    assert set(out["example_metrics"]) == {"loss", *module.metric_names}
    assert all(v.shape == (4,) for v in out["example_metrics"].values())
    torch.testing.assert_close(out["example_metrics"]["loss"], torch.full((4,), math.log(2)))
    assert out["loss"].item() == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    ("loss_type", "step_zero"),
    [("ipo", 1 / (4 * 0.5**2)), ("hinge", 1.0), ("robust", math.log(2))],
)
def test_reference_based_losses_at_step_zero(tokenizer, datamodule, loss_type, step_zero):
    smoothing = 0.1 if loss_type == "robust" else 0.0
    module = dpo(tokenizer, "adapter", beta=0.5, loss_type=loss_type, label_smoothing=smoothing)
    out = step_outputs(module, val_batch(datamodule))
    torch.testing.assert_close(out["per_example_loss"], torch.full((4,), step_zero))
    assert module.average == (loss_type == "ipo")


@pytest.mark.parametrize("loss_type", ["simpo", "orpo"])
def test_reference_free_losses_use_length_averaged_logps(tokenizer, datamodule, loss_type):
    module = dpo(tokenizer, beta=2.0, loss_type=loss_type)
    batch = val_batch(datamodule)
    out = step_outputs(module, batch)
    with torch.no_grad():
        logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    chosen, rejected = completion_logps(*token_cross_entropy(logits, batch["labels"]), average=True).chunk(2)
    expected = (
        simpo_loss(chosen, rejected, beta=2.0, gamma=1.0)
        if loss_type == "simpo"
        else orpo_loss(chosen, rejected, beta=2.0)
    )
    torch.testing.assert_close(out["per_example_loss"], expected[0])
    assert module.reference is None and not module.cached_reference_logps


def test_sft_weight_adds_the_chosen_token_mean_nll(tokenizer, datamodule):
    module = dpo(tokenizer, "adapter", sft_weight=0.5)
    batch = val_batch(datamodule)
    out = step_outputs(module, batch)
    with torch.no_grad():
        per_token, mask = token_cross_entropy(module(batch), batch["labels"])
    half = len(out["per_example_loss"])
    nll = (per_token * mask).sum(-1)[:half] / mask.sum(-1)[:half]
    torch.testing.assert_close(out["per_example_loss"], math.log(2) + 0.5 * nll)


def logps_of(module: DPOModule, batch, reference: str) -> torch.Tensor:
    with torch.no_grad():
        module.model.eval()
        if reference == "adapter":
            with module.model.disable_adapter():
                return module.logps(batch)
        if reference == "copy":
            return module.logps(batch, module.reference_model)
        return module.logps(batch)


def test_precomputed_reference_equals_on_the_fly_and_stays_fixed(tokenizer, datamodule, tiny_trainer):
    module = dpo(tokenizer, "precomputed", lr=1e-2)
    tiny_trainer(max_steps=2).fit(module, datamodule=datamodule)
    batch = val_batch(datamodule)
    cached = module.reference_logps(batch, "val")
    torch.testing.assert_close(cached, logps_of(module, batch, "adapter"), atol=1e-5, rtol=1e-5)
    assert (logps_of(module, batch, "policy") - cached).abs().max() > 1e-2  # the policy has moved


def test_a_precomputed_reference_needs_a_preference_datamodule(tokenizer):
    module = dpo(tokenizer, "precomputed")
    module.trainer = types.SimpleNamespace(datamodule=types.SimpleNamespace(train_examples=[1], val_examples=[1]))
    with pytest.raises(ValueError, match="reference='precomputed' needs a PreferenceDataModule"):
        module.precompute_reference_logps()  # splits of pairs, but no ordered loader over them


def test_adapter_disabled_reference_equals_frozen_copy(tokenizer, datamodule, tiny_trainer):
    module = dpo(tokenizer, "copy", lr=1e-2)
    tiny_trainer(max_steps=2).fit(module, datamodule=datamodule)
    assert not any(p.requires_grad for p in module.reference_model.parameters())
    assert not module.reference_model.training
    batch = val_batch(datamodule)
    copy_ref = logps_of(module, batch, "copy")
    torch.testing.assert_close(copy_ref, logps_of(module, batch, "adapter"), atol=1e-5, rtol=1e-5)
    assert (logps_of(module, batch, "policy") - copy_ref).abs().max() > 1e-2
    # the checkpoint keeps trained weights only: the copy is rebuilt from the pretrained model
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any("reference_model" in k for k in checkpoint["state_dict"])


def test_an_on_the_fly_reference_trains_from_plain_dataloaders(tokenizer, datamodule, tiny_trainer):
    datamodule.setup("fit")  # the loaders alone reach the trainer: no datamodule to precompute from
    module = dpo(tokenizer, "copy", lr=1e-2)
    tiny_trainer(max_steps=2).fit(module, datamodule.train_dataloader(), datamodule.val_dataloader())
    assert module.cached_reference_logps == {} and module.trainer.global_step == 2


def test_cached_reference_round_trips_through_a_checkpoint(tokenizer, datamodule, tiny_trainer):
    module = dpo(tokenizer)
    tiny_trainer().validate(module, datamodule=datamodule, verbose=False)
    checkpoint = {"state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    resumed = dpo(tokenizer)
    resumed.on_load_checkpoint(checkpoint)
    for split in ("train", "val"):
        assert torch.equal(resumed.cached_reference_logps[split], module.cached_reference_logps[split])
    assert module.cached_reference_logps["train"].shape == (8, 2)
    with pytest.raises(ValueError, match="are summed, but module.loss_type=ipo needs length-averaged ones"):
        dpo(tokenizer, loss_type="ipo").on_load_checkpoint(checkpoint)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"label_smoothing": 0.5}, "label_smoothing=0.5: must be in [0, 0.5)."),
        ({"label_smoothing": -0.1}, "label_smoothing=-0.1: must be in [0, 0.5)."),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing=0.1 has no meaning for loss_type=ipo"),
        ({"loss_type": "hinge", "label_smoothing": 0.1}, "label_smoothing=0.1 has no meaning for loss_type=hinge"),
        ({"loss_type": "orpo", "label_smoothing": 0.1}, "label_smoothing=0.1 has no meaning for loss_type=orpo"),
        ({"reference": "adapter", "adapter": None}, "reference=adapter disables the LoRA adapter"),
        ({"loss_type": "kto"}, "unknown loss_type 'kto' (sigmoid, robust, hinge, ipo, simpo, orpo)"),
        ({"reference": "ema"}, "unknown reference 'ema' (precomputed, adapter, copy)"),
    ],
)
def test_dpo_options_are_refused_when_the_module_is_built(options, message):
    built = []  # the model factory is never called: the refusal comes before any model exists
    options = {"adapter": LoRA(r=4), **options}
    with pytest.raises(ValueError, match=re.escape(message)):
        DPOModule(model=lambda: built.append(True), **options)
    assert not built


@pytest.mark.parametrize(
    "options",
    [
        {"loss_type": "sigmoid", "label_smoothing": 0.49},
        {"loss_type": "robust", "label_smoothing": 0.2},
        {"loss_type": "simpo", "label_smoothing": 0.1},
        {"loss_type": "simpo", "reference": "adapter", "adapter": None},  # needs no reference: the option is moot
        {"loss_type": "ipo", "reference": "adapter"},
    ],
)
def test_dpo_options_that_fit_are_accepted(options):
    module = DPOModule(model=lambda: None, **{"adapter": LoRA(r=4), **options})
    assert module.label_smoothing == options.get("label_smoothing", 0.0)
    assert module.reference == (None if options["loss_type"] == "simpo" else options.get("reference", "precomputed"))


def reward_module(tokenizer, **kwargs) -> RewardModelModule:
    return RewardModelModule(model=lambda head: tiny_llama(tokenizer, seed=0, head=head), **kwargs)


def test_reward_model_head_trains_under_lora_and_frozen_backbone(tokenizer):
    from lit_ft.models import Freeze

    lora = reward_module(tokenizer, adapter=LoRA(r=4))
    lora.configure_model()
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("score.modules_to_save" in n for n in trainable) and any("lora_A" in n for n in trainable)
    assert not any("score.original_module" in n for n in trainable)
    frozen = reward_module(tokenizer, freeze=Freeze(train_last_layers=1))
    frozen.configure_model()
    assert "model.score.weight" in {n for n, p in frozen.named_parameters() if p.requires_grad}
    head_only = reward_module(tokenizer, freeze=Freeze(train_lm_head=True))  # freeze=head_only: the score head
    head_only.configure_model()
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {"model.score.weight"}


def test_reward_model_takes_no_lm_head_options(tokenizer):
    """A reward model has a score head, no LM head: the LM-head options are not among its arguments, so a config
    that sets one is refused before anything is built."""
    from lit_ft.config import ConfigError, validate_config

    with pytest.raises(TypeError, match="head_on_loss_tokens"):
        reward_module(tokenizer, head_on_loss_tokens=False)
    assert not hasattr(reward_module(tokenizer), "head_positions")  # Throughput then counts no skipped head
    with pytest.raises(
        ConfigError, match="module.head_chunk_tokens: not an option of lit_ft.modules.RewardModelModule"
    ):
        validate_config(compose_config(["experiment=rm_legal", "+module.head_chunk_tokens=512"]))


def test_pair_gradient_is_the_mean_over_the_accumulation_window(tokenizer, datamodule, tiny_trainer):
    # micro-batches of 1 and 3 pairs: a mean of micro-batch means would weight the single pair 3 times more
    pairs = datamodule.train_examples[:4]
    loader = torch.utils.data.DataLoader([pairs[:1], pairs[1:]], batch_size=None, collate_fn=datamodule.collate_fn())
    reference = tiny_llama(tokenizer, seed=0, head="score")
    module = reward_module(tokenizer, optimizer=lambda groups: torch.optim.SGD(groups, lr=0.0))
    capture = GradCapture()
    tiny_trainer(max_steps=1, accumulate_grad_batches=2, callbacks=[capture], gradient_clip_val=None).fit(
        module, loader
    )
    total = 0.0
    for batch in loader:
        chosen, rejected = (
            reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1).chunk(2)
        )
        total = total + reward_loss(chosen, rejected, batch["margin"]).sum()
    (total / 4).backward()
    for name, parameter in reference.named_parameters():
        assert_close_at_scale(capture.grads[f"model.{name}"], parameter.grad, msg=name)
    assert module.train_loss_tokens == 4 and module.loss_unit == "pairs"


TINY_FAST = ["model=tiny", "logger=csv", "callbacks=none", "+trainer.enable_progress_bar=false"]


def run_overrides(pair_files, *extra: str) -> list[str]:
    train_file, val_file = pair_files
    return [*TINY_FAST, "data=preference", f"data.train_files={train_file}", f"data.val_files={val_file}", *extra]


def test_reward_model_run_learns_and_exports_a_loadable_reward_model(tmp_path, pair_files, tokenizer):
    overrides = run_overrides(
        pair_files,
        "module=reward",
        "peft=lora",
        "trainer.max_epochs=3",
        "module.optimizer.lr=3e-3",
        "data.batch_size=4",
    )
    summary = train(compose_config(overrides, output_dir=tmp_path))
    before, after = summary["val_before"], summary["val_after"]
    assert after["val/rewards/accuracies"] == 1.0 and after["val/loss"] < before["val/loss"] - 0.3
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["train_pairs"] == 3 * 16 and written["val_after"] == after
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert reloaded.config.num_labels == 1 and reloaded.config.pad_token_id == tokenizer.pad_token_id
    dm = PreferenceDataModule(tokenizer, *pair_files, eval_batch_size=8)
    dm.setup("validate")
    margins = []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            chosen, rejected = (
                reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                .logits.squeeze(-1)
                .chunk(2)
            )
            margins.append(chosen - rejected)
    assert torch.cat(margins).mean().item() == pytest.approx(after["val/rewards/margins"], abs=1e-4)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_dpo_run_raises_reward_accuracy_and_margin(tmp_path, pair_files):
    overrides = run_overrides(
        pair_files, "module=dpo", "trainer.max_epochs=2", "module.optimizer.lr=1e-3", "export=false"
    )
    summary = train(compose_config(overrides, output_dir=tmp_path))
    before, after = summary["val_before"], summary["val_after"]
    assert before["val/loss"] == pytest.approx(math.log(2), abs=1e-5) and before["val/rewards/accuracies"] == 0.0
    assert after["val/rewards/accuracies"] >= 0.75 and after["val/rewards/margins"] > 0.1
    assert summary["train_pairs"] == 2 * 16


def test_config_checks_catch_mismatched_module_and_data():
    from lit_ft.config import ConfigError, validate_config

    for experiment in ("rm_legal", "dpo_legal"):
        validate_config(compose_config([f"experiment={experiment}"]))
    with pytest.raises(ConfigError, match="preference pairs"):
        validate_config(compose_config(["module=dpo"]))  # the default data is the SFT set
    with pytest.raises(ConfigError, match="preference pairs"):
        validate_config(compose_config(["data=preference_legal"]))  # SFT on pairs


# --- one-row pair batches (padding-free, shared-prompt): the padded batch's losses, rewards and gradients -----------
ONE_ROW_LAYOUTS = ("padding_free", "shared_prompt")


def both_layouts(tokenizer, datamodule, layout: str = "padding_free") -> tuple[dict, dict]:
    pairs = datamodule.train_examples[:4]
    return PairCollator(tokenizer.pad_token_id)(pairs), PairCollator(tokenizer.pad_token_id, **{layout: True})(pairs)


def outputs_and_gradients(module, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    module.zero_grad()
    out = module.pair_losses(batch, "train")
    out["per_example_loss"].mean().backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return {name: value.detach() for name, value in out.items()}, grads


def assert_same_outputs_and_gradients(module, padded, flat) -> None:
    padded_out, padded_grads = outputs_and_gradients(module, padded)
    flat_out, flat_grads = outputs_and_gradients(module, flat)
    assert padded_out.keys() == flat_out.keys() and padded_grads.keys() == flat_grads.keys() and padded_grads
    for name in padded_out:  # float32 sums over ~100 tokens: a few ulps of the largest log-prob
        torch.testing.assert_close(flat_out[name], padded_out[name], atol=1e-4, rtol=1e-5, msg=name)
    for name in padded_grads:
        torch.testing.assert_close(flat_grads[name], padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def nudge_adapter(module, seed: int = 0) -> None:
    """Move LoRA's B off zero, so that the policy differs from the reference and every reward is non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("layout", ONE_ROW_LAYOUTS)
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])  # summed and length-averaged log-probs
@pytest.mark.parametrize("reference", ["precomputed", "adapter", "copy"])
def test_one_row_dpo_equals_padded(tokenizer, datamodule, reference, loss_type, layout):
    module = DPOModule(
        model=lambda: tiny_llama(tokenizer, seed=0, attn_implementation=SDPA_VARLEN),
        adapter=LoRA(r=4, alpha=8, dropout=0.0),
        optimizer=lambda groups: torch.optim.AdamW(groups),
        reference=reference,
        loss_type=loss_type,
        sft_weight=0.5,
    )
    module.configure_model()
    if reference == "precomputed":  # from padded batches (the ordered loader), looked up by example_index
        module.trainer = types.SimpleNamespace(datamodule=datamodule, ckpt_path=None)
        module.precompute_reference_logps()
    nudge_adapter(module)
    module.model.eval()
    padded, flat = both_layouts(tokenizer, datamodule, layout)
    assert flat["input_ids"].shape[0] == 1 and padded["input_ids"].shape[0] == 8
    rewards = module.pair_losses(flat, "train")["rewards/chosen"]
    assert rewards.abs().min() > 1e-3  # the nudged policy is not its reference
    assert_same_outputs_and_gradients(module, padded, flat)


@pytest.mark.parametrize("layout", ONE_ROW_LAYOUTS)
def test_one_row_reward_model_equals_padded(tokenizer, datamodule, layout):
    module = RewardModelModule(
        model=lambda head: tiny_llama(tokenizer, seed=0, head=head, attn_implementation=SDPA_VARLEN),
        adapter=LoRA(r=4, alpha=8, dropout=0.0),
        center_rewards_coefficient=0.1,
    )
    module.configure_model()
    nudge_adapter(module)
    module.model.eval()
    padded, flat = both_layouts(tokenizer, datamodule, layout)
    assert padded["margin"].abs().sum() > 0  # the margin term is exercised
    assert_same_outputs_and_gradients(module, padded, flat)


def run_summary(tmp_path, experiment: str, *extra: str) -> dict:
    overrides = ["debug=tiny", "callbacks=none", "export=false", "+trainer.enable_progress_bar=false"]
    run_entry_point([f"experiment={experiment}", *overrides, *extra, f"paths.log_dir={tmp_path}"])
    return json.loads((tmp_path / "debug_tiny" / "summary.json").read_text())


@pytest.mark.parametrize("layout", ONE_ROW_LAYOUTS)
def test_dpo_legal_trains_on_one_row_batches(tmp_path, layout):
    """At step 1 the policy is its reference (fresh LoRA), so the loss is log 2 only if the policy's log-probs from
    padding-free (or shared-prompt) batches equal the reference's, precomputed from padded ones."""
    attention = ["+model.attn_implementation=sdpa_varlen"] if layout == "shared_prompt" else []  # model=tiny: sdpa
    summary = run_summary(tmp_path, "dpo_legal", f"data.{layout}=true", *attention)
    assert summary["history"]["train/loss"][0] == [1, pytest.approx(math.log(2), abs=1e-5)]
    assert summary["val_after"]["val/loss"] < math.log(2) and summary["optimizer_steps"] == 3


def test_rm_legal_padding_free_run_starts_from_the_padded_run_loss(tmp_path):
    """The first step's loss comes from the initial model: the same with either layout."""
    flat = run_summary(tmp_path / "flat", "rm_legal", "data.padding_free=true")
    padded = run_summary(tmp_path / "padded", "rm_legal", "data.padding_free=false")
    (step, flat_loss), (_, padded_loss) = flat["history"]["train/loss"][0], padded["history"]["train/loss"][0]
    assert step == 1 and flat_loss == pytest.approx(padded_loss, abs=1e-5) and flat_loss != pytest.approx(math.log(2))
    assert flat["optimizer_steps"] == 3 and flat["val_after"]["val/loss"] != flat["val_before"]["val/loss"]

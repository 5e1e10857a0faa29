"""Config validation at start: misspelt keys, wrong types and incompatible options fail naming the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

from lit_ft.config import PACKING_SAFE_ATTENTION, ConfigError, validate_config
from lit_ft.config.checks import check_forgetting_regularisers
from lit_ft.run import train
from tests.support.helpers import CONF, compose_config, experiment_names, run_entry_point


@pytest.mark.parametrize("experiment", [None, *experiment_names()])
def test_shipped_configs_are_valid(experiment, tmp_path):
    validate_config(compose_config([f"experiment={experiment}"] if experiment else [], output_dir=tmp_path))


@pytest.mark.parametrize(
    "overrides",
    [
        ["module.compile=true", "module.head_on_loss_tokens=false", "module.head_chunk_tokens=512"],
        [
            "module=dpo",
            "data=preference_legal",
            "data.train_samples=8",
            "data.max_val_rows=4",
            "data.group_by_length=true",
        ],
        ["experiment=cpt_legal", "data.group_by_length=true"],
        ["module=reward", "data=preference_legal", "module.compile=true"],
        [
            "experiment=cpt_legal",
            "data.train_files=null",
            "data.mixture=[{files: data/legal_cpt/train.jsonl, weight: 0.8}, {files: data/legal/train.jsonl, weight: 0.2}]",
        ],
    ],
)
def test_documented_options_override_without_a_plus(overrides, tmp_path):
    # Hydra refuses `key=value` for a key the YAML lacks (it wants `+key=value`): the docs' commands work as written
    validate_config(compose_config(overrides, output_dir=tmp_path))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+data.bach_size=8"],
            "data.bach_size: not an option of lit_ft.data.SFTDataModule (did you mean 'batch_size'",
        ),
        (["data.batch_size=eight"], "data.batch_size='eight': expected int"),
        (["data.max_length=null"], "data.max_length=None: expected int"),
        (["data.truncation=rightt"], "data.truncation='rightt': not one of 'right', 'left', 'drop'"),
        (["data.packing=maybe"], "data.packing='maybe': expected bool"),
        (["module.weight_decay=lots"], "module.weight_decay='lots': expected float"),
        (["+module.optimizer.lrr=1e-3"], "module.optimizer.lrr: not an option of torch.optim.AdamW (did you mean 'lr'"),
        (["module.scheduler.warmup=soon"], "module.scheduler.warmup='soon': expected float"),
        (["module.optimizer.lr=fast"], "module.optimizer.lr='fast': expected float"),  # annotated `float | Tensor`
        (["model.dtype=3"], None),  # a number is a valid str; the loader rejects unknown dtypes itself
        (["+model.gradient_checkpoint=true"], "model.gradient_checkpoint: not an option of lit_ft.models.load_model"),
        (["peft=lora", "peft.r=four"], "peft.r='four': expected int"),
        (["trainer.precision=bf16mixed"], "trainer.precision='bf16mixed': not one of"),
        (["+trainer.max_step=3"], "trainer.max_step: not an option of lightning.Trainer (did you mean 'max_steps'"),
        (["callbacks.last_checkpoint.every_n_train_steps=often"], "every_n_train_steps='often': expected int | None"),
        (
            ["module._target_=lit_ft.modules.NoSuchModule"],
            "module._target_: cannot import 'lit_ft.modules.NoSuchModule'",
        ),
    ],
)
def test_typos_and_wrong_types_name_the_key(overrides, message, tmp_path):
    cfg = compose_config(overrides, output_dir=tmp_path)
    if message is None:
        validate_config(cfg)
        return
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.packing=true", "model.attn_implementation=paged_attention"],
            "data.packing=true with model.attn_implementation=paged_attention",
        ),
        (
            ["strategy=deepspeed_zero3", "callbacks=[default,early_stopping]"],
            "callbacks.early_stopping (EarlyStoppingWithRestore) reads the weights between steps, which DeepSpeed "
            "ZeRO-3 partitions away",
        ),
        (["strategy=deepspeed_zero3", "callbacks=[default,forgetting]"], "callbacks.forgetting (ForgettingCheck)"),
        (  # a custom early-stopping node without restore_best gets the constructor's default: restore
            ["strategy=deepspeed_zero3", "+callbacks.stop._target_=lit_ft.callbacks.EarlyStoppingWithRestore"],
            "callbacks.stop (EarlyStoppingWithRestore)",
        ),
        (  # padding-free batches (the default) rely on the same position-id boundaries as packing
            ["model.attn_implementation=paged_attention"],
            "data.padding_free=true with model.attn_implementation=paged_attention",
        ),
        (["model.attn_implementation=flash_attention_2"], "needs a CUDA GPU (trainer=gpu); on CPU use sdpa"),
        (  # shared prompts: only sdpa_varlen keeps the rejected answer on its prompt and off the chosen one
            ["experiment=dpo_legal", "data.shared_prompt=true", "model.attn_implementation=sdpa"],
            "data.shared_prompt=true with model.attn_implementation=sdpa: only sdpa_varlen keeps",
        ),
        (
            ["experiment=rm_legal", "data.shared_prompt=true", "model.attn_implementation=flash_attention_2"],
            "data.shared_prompt=true with model.attn_implementation=flash_attention_2",
        ),
        (["peft=qlora"], "On CPU use peft=lora"),
        (["strategy=fsdp", "ewc=general"], "ewc (set ewc=null) does not work with the strategy"),
        (["strategy=fsdp", "mixout=default"], "mixout (set mixout=null) does not work with the strategy"),
        (["strategy=fsdp", "module.l2sp=0.1"], "module.l2sp=0.1 (set module.l2sp=0) does not work"),
        (
            ["ewc=general", "module.optimizer_in_backward=true", "trainer.gradient_clip_val=null"],
            "module.ewc.strength=10000.0: EWC's gradient is added after backward (set ewc=null)",
        ),
        (["model.quantization=nf4", "trainer=gpu"], "use peft=qlora"),
        (  # data=legal serves padding-free training batches: one row holds several prompts
            ["module=rl", "reward=task_metric", "peft=lora"],
            "module=rl reads each row's prompt and reference answer from padded batches, and data.padding_free=true",
        ),
    ],
)
def test_incompatible_options_are_refused_with_the_fix(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(compose_config(overrides, output_dir=tmp_path))


def test_evaluation_builds_no_padding_free_rows_so_any_attention_backend_is_accepted(tmp_path):
    validate_config(compose_config(["model.attn_implementation=paged_attention"], tmp_path, name="eval"))
    shared = ["experiment=dpo_legal", "data.shared_prompt=true", "model.attn_implementation=sdpa"]
    validate_config(compose_config(shared, tmp_path, name="eval"))


def test_shared_prompts_are_accepted_with_the_cpu_default_attention(tmp_path):
    cfg = compose_config(["experiment=dpo_legal", "data.shared_prompt=true"], output_dir=tmp_path)
    assert cfg.model.attn_implementation == "sdpa_varlen"
    validate_config(cfg)


@pytest.mark.parametrize(
    ("attention", "shared"), [(None, True), ("sdpa", False), ("flash_attention_2", False), ("eager", False)]
)
def test_preference_pairs_share_their_prompt_where_the_attention_allows(attention, shared, tmp_path):
    """The benchmarked default: shared prompts with the CPU default attention, padding-free pairs elsewhere."""
    overrides = ["experiment=dpo_legal"] + ([f"model.attn_implementation={attention}"] if attention else [])
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert (cfg.data.shared_prompt, cfg.data.padding_free) == (shared, True)
    if attention != "flash_attention_2":  # refused on a CPU machine for its own reason
        validate_config(cfg)


def test_packing_is_allowed_with_backends_that_keep_examples_apart(tmp_path):
    # eager and sdpa are checked numerically in test_data.py::test_packed_logits_equal_each_example_alone.
    for attention in ("sdpa", "eager"):
        validate_config(compose_config(["data.packing=true", f"model.attn_implementation={attention}"], tmp_path))
    # every backend called safe gets the packed-sequence mask from transformers' masking utilities
    assert set(PACKING_SAFE_ATTENTION) <= set(ALL_MASK_ATTENTION_FUNCTIONS._global_mapping)


def test_a_run_with_a_typo_stops_before_building_anything(tmp_path):
    cfg = compose_config(["model=tiny", "+data.bach_size=8", "module.optimizer.lr=fast"], output_dir=tmp_path)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert "data.bach_size" in str(error.value) and "module.optimizer.lr='fast': expected float" in str(error.value)
    assert not (tmp_path / "config.yaml").exists()


# Rules about one object's own options live in its constructor (lit_ft/config/checks.py holds only rules that span
# objects); lit_ft.run builds the module before it writes or loads anything, so they stop a run as early.
OWN_RULES = [
    (["peft=lora", "freeze=top_layers"], "peft and freeze are both set"),
    (["experiment=dpo_legal", "module.label_smoothing=0.5"], "label_smoothing=0.5: must be in [0, 0.5)."),
    (
        ["experiment=dpo_legal", "module.loss_type=ipo", "module.label_smoothing=0.1"],
        "label_smoothing=0.1 has no meaning for loss_type=ipo",
    ),
    (
        ["module=dpo", "data=preference_legal", "module.reference=adapter"],
        "reference=adapter disables the LoRA adapter to get the reference, but there is none: add peft=lora",
    ),
    (["module=reward", "data=preference_legal", "ewc=general"], "a reward model has no LM head: leave out ewc="),
    (["ewc=general", "module.ewc.strength=0"], "ewc strength=0: must be > 0"),
    (["mixout=default", "module.mixout.p=1"], "mixout p=1: must be in [0, 1)"),
]


@pytest.mark.parametrize(("overrides", "message"), OWN_RULES)
def test_an_objects_own_rule_stops_a_run_before_anything_is_written(overrides, message, tmp_path):
    cfg = compose_config(overrides, output_dir=tmp_path / "run")
    validate_config(cfg)  # no config check of it: one home per rule
    with pytest.raises(Exception, match=re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_the_command_line_stops_at_start_on_an_objects_own_rule(tmp_path):
    overrides, message = OWN_RULES[2]
    result = run_entry_point([*overrides, f"paths.log_dir={tmp_path}", "run_name=bad"], check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "bad" / "config.yaml").exists()  # the run's own files: none (Hydra's .hydra/ is there)


def extended(path: Path) -> list[Path]:
    """The configs ``path``'s defaults list extends by name (``- sft``, ``- /peft/lora``), not group choices; only
    those in ``conf/`` (not a Hydra plugin's, such as ``submitit_slurm``) and not placed under another package."""
    entries = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
    names = [e for e in entries if isinstance(e, str) and e != "_self_" and "@" not in e]
    paths = [CONF / f"{n[1:]}.yaml" if n.startswith("/") else path.parent / f"{n}.yaml" for n in names]
    return [p for p in paths if p.exists()]


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 2e-05, ...}``: every value of a config by its dotted key (the defaults list left out)."""
    if isinstance(node, dict) and node:
        items = ((key, value) for key, value in node.items() if not (prefix == "" and key == "defaults"))
        return {k: v for key, value in items for k, v in leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def inherited(path: Path) -> dict[str, Any]:
    """What ``path`` gets from the configs it extends (and they from theirs), later ones winning, as Hydra merges."""
    values: dict[str, Any] = {}
    for base in extended(path):
        values.update(inherited(base))
        values.update(leaves(yaml.safe_load(base.read_text())))
    return values


EXTENDING = sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml") if extended(p))


def test_module_data_and_model_configs_extend_their_base_instead_of_copying_it():
    groups = ("module", "data")
    expected = {f"{g}/{p.name}" for g in groups for p in (CONF / g).glob("*.yaml") if p.name != "base.yaml"}
    assert expected <= set(EXTENDING) and {"model/smollm2-135m-instruct.yaml", "eval.yaml"} <= set(EXTENDING)
    # the reward model has no LM head: it extends the shared base, not sft.yaml and its LM-head options
    assert extended(CONF / "module/reward.yaml") == [CONF / "module/base.yaml"]
    assert "head_on_loss_tokens" in inherited(CONF / "module/dpo.yaml")
    assert "head_on_loss_tokens" not in inherited(CONF / "module/reward.yaml")


@pytest.mark.parametrize("name", [*EXTENDING, "entry/eval.yaml"])
def test_a_config_repeats_no_value_it_inherits(name):
    # eval.yaml's own settings are entry/eval.yaml, composed in place of entry/train.yaml on top of train.yaml
    path = CONF / name
    base = leaves(yaml.safe_load((CONF / "train.yaml").read_text())) if name == "entry/eval.yaml" else {}
    base.update(inherited(path))
    own = leaves(yaml.safe_load(path.read_text()) or {})
    assert base, f"{name} inherits nothing"
    repeated = {key: value for key, value in own.items() if key in base and base[key] == value}
    assert not repeated, f"{name} repeats what it inherits: {repeated}"


def test_mixout_goes_with_zero2_and_ddp_but_l2sp_and_ewc_with_no_deepspeed_stage():
    zero2 = compose_config(["strategy=deepspeed_zero2", "mixout=default", "ewc=general", "module.l2sp=0.1"])
    refused = [error.split(" (set")[0] for error in check_forgetting_regularisers(zero2)]
    assert refused == ["module.l2sp=0.1", "ewc"]  # ZeRO-2 keeps whole weights but owns the gradients
    assert check_forgetting_regularisers(compose_config(["strategy=ddp", "mixout=default", "ewc=general"])) == []


def test_eval_py_generates_as_the_experiments_task_scores_callback_unless_told_otherwise(tmp_path):
    """``python eval.py experiment=lora_legal model_path=...`` answers the prompts the run scored, as long and in
    the same batches, so it reports the scores the run printed; the ``generation.*`` options still win."""
    trained = compose_config(["experiment=lora_legal"], tmp_path).callbacks.task_scores
    evaluated = compose_config(["experiment=lora_legal"], tmp_path, name="eval").generation
    for key in ("max_examples", "max_new_tokens", "batch_size"):
        assert evaluated[key] == trained[key], key
    assert (trained.max_examples, trained.max_new_tokens) == (None, 64)  # the flagship's own, not the defaults
    told = compose_config(["experiment=lora_legal", "generation.max_new_tokens=9"], tmp_path, name="eval")
    assert told.generation.max_new_tokens == 9
    plain = compose_config([], tmp_path, name="eval").generation  # no task_scores callback: eval.py's defaults
    assert (plain.max_examples, plain.max_new_tokens, plain.batch_size) == (16, 128, 32)

"""eval.py's pipeline on the tiny model: loading a saved model, adapter or checkpoint, per-task loss, generations."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lit_ft.data.prompts import prompts_from_records
from lit_ft.data.readers import Record
from lit_ft.eval.diff import load_run_metrics
from lit_ft.eval.generation import generate_answers
from lit_ft.eval.loading import load_eval_model, model_kind
from lit_ft.evaluate import evaluate
from lit_ft.losses import token_cross_entropy
from lit_ft.run import train
from tests.conftest import arithmetic_rows, chat, write_jsonl
from tests.support.helpers import REPO, compose_config, experiment_names


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny LoRA run that leaves model/, adapter/ and checkpoints/last.ckpt, and its data files."""
    folder = tmp_path_factory.mktemp("lora_run")
    rows = arithmetic_rows(24)
    train_file, val_file = write_jsonl(folder / "train.jsonl", rows[:16]), write_jsonl(folder / "val.jsonl", rows[16:])
    data = [f"data.train_files={train_file}", f"data.val_files={val_file}", "data.batch_size=4"]
    cfg = compose_config(
        [
            "model=tiny",
            "peft=lora",
            "peft.dropout=0.0",
            "logger=none",
            "callbacks=default",
            "callbacks.progress_bar=null",
            "+trainer.enable_progress_bar=false",
            "trainer.max_steps=4",
            "module.optimizer.lr=1e-2",
            *data,
        ],
        output_dir=folder / "run",
    )
    summary = train(cfg)
    return {"dir": folder / "run", "summary": summary, "data": data, "val_file": val_file}


def eval_config(run, tmp_path, *overrides):
    return compose_config(
        ["model=tiny", "task_metrics=text", "generation.max_new_tokens=6", *run["data"], *overrides],
        output_dir=tmp_path,
        name="eval",
    )


@pytest.mark.parametrize("saved", ["adapter", "checkpoints/last.ckpt"])
def test_saved_adapter_and_checkpoint_reproduce_the_training_val_loss(lora_run, tmp_path, saved):
    path = lora_run["dir"] / saved
    assert model_kind(path) == ("adapter" if saved == "adapter" else "checkpoint")
    result = evaluate(eval_config(lora_run, tmp_path, f"model_path={path}", "generation.enabled=false"))
    # the same weights on the same validation split give the loss training logged last
    assert result["overall"]["loss"] == pytest.approx(lora_run["summary"]["val_loss_after"], rel=1e-4)
    assert result["overall"]["tokens"] == lora_run["summary"]["data"]["val"]["loss_tokens"]
    assert json.loads((tmp_path / "eval.json").read_text())["model"]["kind"] == model_kind(path)


def test_saved_model_gives_the_training_val_loss_and_per_task_losses_of_separate_forwards(lora_run, tmp_path):
    cfg = eval_config(lora_run, tmp_path, f"model_path={lora_run['dir'] / 'model'}", "generation.enabled=false")
    result = evaluate(cfg)
    assert result["model"]["kind"] == "model"
    assert result["overall"]["loss"] == pytest.approx(lora_run["summary"]["val_loss_after"], rel=1e-4)
    # and the per-task losses the TaskMetrics callback recorded after training
    trained = load_run_metrics(lora_run["dir"])
    assert set(trained) == {"all", "add", "sum"}
    for task in ("add", "sum"):
        assert result["per_task"][task]["loss"] == pytest.approx(trained[task]["loss"], rel=1e-4)
    loaded = load_eval_model(cfg, cfg.model_path)
    from lit_ft.data import SFTDataModule

    datamodule = SFTDataModule(loaded.tokenizer, lora_run["val_file"], lora_run["val_file"], max_length=256)
    datamodule.setup()
    for task, values in result["per_task"].items():
        total, tokens = 0.0, 0
        for example in datamodule.val_examples:
            if example["task_type"] == task:
                ids = torch.tensor([example["input_ids"]])
                with torch.no_grad():
                    logits = loaded.module.model(input_ids=ids).logits
                per_token, mask = token_cross_entropy(logits, torch.tensor([example["labels"]]))
                total, tokens = total + per_token[mask].sum().item(), tokens + int(mask.sum())
        assert values["tokens"] == tokens
        assert values["loss"] == pytest.approx(total / tokens, rel=1e-4)
        assert values["ppl"] == pytest.approx(torch.tensor(total / tokens).exp().item(), rel=1e-4)
    weighted = sum(v["loss"] * v["tokens"] for v in result["per_task"].values()) / result["overall"]["tokens"]
    assert weighted == pytest.approx(result["overall"]["loss"])


def test_a_model_exported_by_an_rl_run_is_evaluated_under_its_experiments_module(lora_run, tmp_path):
    # `python eval.py experiment=rl_legal model_path=logs/rl_legal/model`: the RL module's reference is its policy
    # with the adapter off, and the exported model has none; evaluating needs no reference, so none is asked for
    overrides = ("generation.enabled=false", "module=rl", "reward=task_metric")
    cfg = eval_config(lora_run, tmp_path, f"model_path={lora_run['dir'] / 'model'}", *overrides)
    assert cfg.module.reference == "adapter" and cfg.module.beta > 0 and cfg.peft is None
    loaded = load_eval_model(cfg, cfg.model_path)
    assert type(loaded.module).__name__ == "RLModule" and loaded.module.reference_model is None
    result = evaluate(cfg)  # the same weights give the loss training logged last
    assert result["overall"]["loss"] == pytest.approx(lora_run["summary"]["val_loss_after"], rel=1e-4)


def test_a_dpo_export_is_evaluated_whatever_reference_its_run_used(lora_run, tmp_path):
    model = lora_run["dir"] / "model"
    losses = {}
    for reference in ("adapter", "copy", "precomputed"):
        overrides = ["experiment=dpo_legal", f"model_path={model}", f"module.reference={reference}"]
        cfg = compose_config(
            [*overrides, "generation.enabled=false", "loss.max_batches=2"], output_dir=tmp_path / reference, name="eval"
        )
        loaded = load_eval_model(cfg, cfg.model_path)
        assert loaded.module.reference_model is None  # no frozen copy of the evaluated model
        losses[reference] = evaluate(cfg)["overall"]["loss"]
    assert losses["adapter"] == losses["copy"] == losses["precomputed"]  # the same model on the same pairs


def test_generations_are_saved_and_scored_and_general_ability_measured(lora_run, tmp_path):
    overrides = ["generation.max_examples=3", "loss.enabled=false", "forgetting.enabled=true"]
    limits = ["forgetting.max_questions=5", "forgetting.max_passages=2"]
    result = evaluate(eval_config(lora_run, tmp_path, *overrides, *limits))
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and [r["task_type"] for r in rows] == ["sum", "add", "sum"]  # in turn from each task
    folder = lora_run["val_file"].parent.name
    assert all(r["id"].startswith(f"{folder}/val.jsonl:") and r["reference"].startswith("SUM: ") for r in rows)
    assert all(set(r["scores"]) == {"exact_match", "token_f1", "rouge_l"} for r in rows)
    assert result["per_task"]["sum"]["n"] == 2 and result["per_task"]["add"]["n"] == 1
    mean_f1 = sum(r["scores"]["token_f1"] for r in rows if r["task_type"] == "sum") / 2
    assert result["per_task"]["sum"]["token_f1"] == pytest.approx(mean_f1)
    assert result["generation"]["generations"] == 3 and "loss" not in result["overall"]
    # the forgetting check's scorer on 5 questions (accuracy in fifths) and 2 passages
    general = result["forgetting"]
    assert general["mcq_acc"] * 5 == pytest.approx(round(general["mcq_acc"] * 5)) and general["prose_ppl"] > 1
    assert load_run_metrics(tmp_path)["general"]["mcq_acc"] == general["mcq_acc"]


def test_prompts_are_cut_before_the_last_answer_and_taken_in_turn():
    two_turns = chat("Summarise: X.", "S", "summarize")
    two_turns["messages"] += [
        {"role": "user", "content": "And classify it."},
        {"role": "assistant", "content": "TYPE: a"},
    ]
    two_turns["task_type"] = "classify"
    records = [
        Record("d/v.jsonl:1", two_turns),
        Record("d/v.jsonl:2", chat("q2", "a2", "classify")),
        Record("d/v.jsonl:3", {"prompt": "1 + 1 =", "completion": " 2", "task_type": "math"}),
        Record("d/v.jsonl:4", {"text": "raw text has no prompt"}),
    ]
    prompts = prompts_from_records(records)
    assert [p["id"] for p in prompts] == ["d/v.jsonl:1", "d/v.jsonl:3", "d/v.jsonl:2"]
    assert prompts[0]["messages"][-1]["content"] == "And classify it." and prompts[0]["reference"] == "TYPE: a"
    assert prompts[1] == {"id": "d/v.jsonl:3", "task_type": "math", "text": "1 + 1 =", "reference": " 2"}
    pair = Record("d/p.jsonl:1", {"prompt": [{"role": "user", "content": "q"}], "chosen": "yes", "rejected": "no"})
    assert prompts_from_records([pair]) == [  # a preference row: its prompt, the chosen answer as reference
        {
            "id": "d/p.jsonl:1",
            "messages": [{"role": "user", "content": "q"}],
            "reference": "yes",
            "task_type": "default",
        }
    ]
    # a mixture's sources may share a file name: their folder keeps the ids apart
    mixed = [Record("data/legal/val.jsonl:1", chat("a", "b")), Record("data/general_chat/val.jsonl:1", chat("c", "d"))]
    assert [p["id"] for p in prompts_from_records(mixed)] == ["legal/val.jsonl:1", "general_chat/val.jsonl:1"]
    assert len(prompts_from_records(records, limit=2)) == 2


def test_generation_leaves_the_callers_random_state_as_it_was(tokenizer, tiny_model):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    prompts = [{"text": "Once upon"}]
    sampled = generate_answers(tiny_model, tokenizer, prompts, max_new_tokens=3, do_sample=True, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # training's dropout stream goes on undisturbed
    assert sampled == generate_answers(tiny_model, tokenizer, prompts, max_new_tokens=3, do_sample=True, seed=7)


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tokenizer, tiny_model):
    texts = ["Once upon", "The cat sat on the mat and then", "A"]
    prompts = [{"messages": [{"role": "user", "content": "Hi there"}]}] + [{"text": t} for t in texts]
    batched = generate_answers(tiny_model, tokenizer, prompts, max_new_tokens=5, batch_size=4)
    alone = [generate_answers(tiny_model, tokenizer, [p], max_new_tokens=5)[0] for p in prompts]
    assert batched == alone and all(batched[1:])  # (the random model ends its chat answer at once)


def test_an_experiment_names_its_evaluation_and_keeps_its_callbacks(tmp_path):
    # eval.py's own settings (conf/entry/eval.yaml) come before the experiment in the composition, so the
    # experiment's task_name and callbacks win over eval's defaults (task_name=base, callbacks=none)
    assert compose_config([], output_dir=tmp_path, name="eval").run_name == "eval_base"
    for experiment in experiment_names():
        cfg = compose_config([f"experiment={experiment}"], output_dir=tmp_path, name="eval")
        assert cfg.mode == "eval" and cfg.run_name == f"eval_{experiment}"
    lora = compose_config(["experiment=lora_legal"], output_dir=tmp_path, name="eval")
    assert {"early_stopping", "generation_samples"} <= set(lora.callbacks) and lora.logger == {}
    assert compose_config(["debug=tiny"], output_dir=tmp_path, name="eval").run_name == "debug_tiny"


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_every_entry_point_resolves_an_experiment_that_uses_lit_fts_resolvers(script):
    # dpo_legal's model is ${first_existing:...}: the entry point must register the resolver before Hydra composes
    done = subprocess.run(
        [sys.executable, script, "experiment=dpo_legal", "--cfg", "job", "--resolve"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "name_or_path:" in done.stdout and "first_existing" not in done.stdout


def test_eval_files_replace_the_data_groups_validation_split(lora_run, tmp_path):
    cfg = compose_config(
        ["model=tiny", "data=legal_mix", f"eval_files=[{lora_run['val_file']}]", "generation.enabled=false"],
        output_dir=tmp_path,
        name="eval",
    )
    result = evaluate(cfg)  # the legal mixture is not read: only the given file, tokenised the same way
    assert set(result["per_task"]) == {"add", "sum"} and result["data"]["files"] == [str(lora_run["val_file"])]
    assert result["overall"]["tokens"] == lora_run["summary"]["data"]["val"]["loss_tokens"]

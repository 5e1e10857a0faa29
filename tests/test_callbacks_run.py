"""The callback library through the training pipeline, and generation samples from the validation set."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from lit_ft.callbacks import GenerationSamples
from lit_ft.callbacks.generation import prompt_tail
from lit_ft.data.prompts import prompts_from_records
from lit_ft.data.readers import Record
from lit_ft.run import train
from tests.conftest import chat
from tests.support.helpers import compose_config


def test_validation_prompts_take_turns_over_task_types():
    rows = [
        chat("q1", "a1", "x"),
        chat("q2", "a2", "x"),
        chat("q3", "a3", "x"),
        {"prompt": "Translate: cat ->", "completion": " chat", "task_type": "y"},
        {"text": "raw text, nothing to prompt with", "task_type": "z"},
    ]
    prompts = prompts_from_records([Record(f"f:{i}", row) for i, row in enumerate(rows)], limit=3)
    assert [(p["task_type"], p["reference"]) for p in prompts] == [("x", "a1"), ("y", " chat"), ("x", "a2")]
    assert prompts[0]["messages"] == [{"role": "user", "content": "q1"}] and prompts[1]["text"] == "Translate: cat ->"


def test_long_prompts_are_shown_from_a_word_boundary():
    assert prompt_tail("Is this clause standard?") == "Is this clause standard?"
    text = "The Supplier shall deliver the goods within thirty days. Does anything need flagging?"
    assert prompt_tail(text, max_chars=40) == "…days. Does anything need flagging?"  # not "…hirty days. ..."
    assert prompt_tail("x" * 50, max_chars=10) == "…" + "x" * 10  # one long word: cut inside it
    assert prompt_tail("aaa bbb ccc", max_chars=7) == "…bbb ccc"  # the cut is a word boundary: nothing dropped


def test_samples_are_the_greedy_continuations(tokenizer, tiny_model):
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    module = torch.nn.Module()
    module.model, module.device = tiny_model, torch.device("cpu")
    answer = GenerationSamples(prompts=[{"messages": messages}], max_new_tokens=5).generate(module, tokenizer)[0]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    new = []
    with torch.no_grad():
        for _ in range(5):
            token = int(tiny_model.eval()(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_summary_holds_per_task_loss_forgetting_early_stopping_perf_and_samples(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    cfg = compose_config(
        [
            "model=tiny",
            "logger=csv",
            "callbacks=[default,early_stopping,forgetting,samples]",
            "callbacks.progress_bar=null",
            "callbacks.throughput.peak_flops=1e11",
            "callbacks.forgetting.max_questions=4",
            "callbacks.forgetting.max_passages=1",
            "callbacks.generation_samples.prompts_file=null",
            "callbacks.generation_samples.val_prompts=2",
            "callbacks.generation_samples.max_new_tokens=4",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.batch_size=8",
            "trainer.max_steps=5",  # checks at steps 2 and 4; the weights of step 5 are never validated
            "trainer.val_check_interval=2",
            "module.optimizer.lr=3e-3",
        ],
        output_dir=tmp_path,
    )
    summary = train(cfg)
    written = json.loads((tmp_path / "summary.json").read_text())
    per_task = written["per_task"]
    assert set(per_task) == {"add", "sum"}
    for when in ("before", "after"):  # the per-task losses weighted by their tokens give the overall loss back
        tokens = sum(task["val_tokens"] for task in per_task.values())
        whole = sum(task[f"val_loss_{when}"] * task["val_tokens"] for task in per_task.values()) / tokens
        assert whole == pytest.approx(summary[f"val_loss_{when}"], rel=1e-5)
    assert sum(task["val_examples"] for task in per_task.values()) == 8

    forgetting = written["forgetting"]
    assert forgetting["questions"] == 4 and forgetting["passages"] == 1
    assert forgetting["delta"]["prose_ppl"] == pytest.approx(
        forgetting["final"]["prose_ppl"] - forgetting["baseline"]["prose_ppl"]
    )
    stopping = written["early_stopping"]
    assert stopping["restored_best"] and stopping["best_step"] in (2, 4)
    # checks after training are labelled with the step of the weights they scored: the restored best step
    assert forgetting["checks"][-1]["stage"] == "final" and forgetting["checks"][-1]["step"] == stopping["best_step"]
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows if row["stage"] == "after"} == {stopping["best_step"]}
    assert written["perf"]["tokens_per_s"] > 0 and written["perf"]["mfu"] > 0
    assert len(written["samples"]) == 2 and {"before", "after"} <= set(written["samples"][0])

    with (tmp_path / "csv" / "metrics.csv").open() as handle:
        columns = set(next(csv.reader(handle)))
    expected = {"train/loss/add", "val/loss/sum", "val/tokens/add", "forgetting/mcq_acc_delta", "perf/tokens_per_s"}
    assert expected <= columns


@pytest.mark.slow
def test_a_resume_that_restores_after_setup_scores_the_baseline_and_samples_once(tmp_path, arithmetic_files, caplog):
    """FSDP and DeepSpeed load a checkpoint after on_fit_start (tests.support.faults.RestoreAfterSetup does the same on
    one CPU): the work before training must wait for it, or a resumed run scores and samples 'before' again."""
    train_file, val_file = arithmetic_files
    overrides = [
        "model=tiny",
        "logger=none",
        "callbacks=[default,forgetting,samples]",
        "callbacks.progress_bar=null",
        "callbacks.throughput.peak_flops=null",
        "callbacks.forgetting.max_questions=4",
        "callbacks.forgetting.max_passages=1",
        "callbacks.generation_samples.prompts_file=null",
        "callbacks.generation_samples.val_prompts=2",
        "callbacks.generation_samples.max_new_tokens=2",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "+trainer.strategy._target_=tests.support.faults.RestoreAfterSetup",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "data.batch_size=8",
        "validate_before=false",
    ]
    caplog.set_level(logging.INFO, logger="lit_ft.callbacks.forgetting")
    train(compose_config([*overrides, "trainer.max_steps=2"], output_dir=tmp_path))
    train(compose_config([*overrides, "trainer.max_steps=4", "ckpt_path=last"], output_dir=tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [row["stage"] for row in rows].count("before") == 2  # the 2 prompts, sampled by the first run only
    assert sum("Forgetting check (baseline" in record.getMessage() for record in caplog.records) == 1

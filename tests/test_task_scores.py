"""Task scores during training (the TaskScores callback): eval.py's task metrics on held-out prompts, logged as
val/<metric>/<task>, equal to what eval.py reports for the same weights, and monitorable by early stopping."""

from __future__ import annotations

import csv
import json
import types

import pytest
import torch

from lit_ft.callbacks import TaskScores
from lit_ft.data.prompts import prompts_from_records
from lit_ft.data.readers import read_records
from lit_ft.eval import LabelMetrics, TextOverlap
from lit_ft.eval.generation import prompt_ids
from lit_ft.eval.task_metrics import logged_scores
from lit_ft.eval.task_scores import generate_and_score
from lit_ft.summary import summary_value
from tests.support.helpers import REPO, run_entry_point
from tests.support.wandb_records import logged_run, offline_without_api_key

# The real model's held-out prompts, tiny-model weights, bounded generation. The classify metric parses the first
# word as the label, so its parse rate moves with what the tiny model says (nothing, then words): a score that
# changes between checks, for early stopping to follow.
PROMPTS = ["callbacks.task_scores.max_examples=8", "callbacks.task_scores.max_new_tokens=16"]
FIRST_WORD = "task_metrics.classify.pattern='(\\w+)'"
MONITOR = "val/parse_rate/classify"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``python train.py experiment=lora_legal debug=tiny`` with task scores at every validation (5, 10, 15, 20)
    and early stopping on a task score; then ``python eval.py`` on the exported model with the same prompts."""
    folder = tmp_path_factory.mktemp("task_scores")
    with pytest.MonkeyPatch.context() as env:
        offline_without_api_key(env, folder)  # the same values go to W&B, read back from its offline run file
        trained = run_entry_point(
            [
                "experiment=lora_legal",
                "debug=tiny",
                f"paths.output_dir={folder / 'run'}",
                "logger=[csv,wandb]",
                "callbacks.progress_bar=null",
                "+trainer.enable_progress_bar=false",
                "callbacks.forgetting=null",
                "callbacks.generation_samples=null",
                *PROMPTS,
                "callbacks.task_scores.every_validation=true",
                FIRST_WORD,
                "trainer.max_steps=20",
                "trainer.val_check_interval=5",
                "data.batch_size=8",  # 20 steps of 8: what makes the tiny model's first words change between checks
                "module.optimizer.lr=0.05",
                f"callbacks.early_stopping.monitor={MONITOR}",
                "callbacks.early_stopping.mode=max",
            ]
        )
    run_entry_point(
        [
            "experiment=lora_legal",
            "debug=tiny",
            f"model_path={folder / 'run' / 'model'}",
            f"paths.output_dir={folder / 'eval'}",
            *PROMPTS,  # eval.py's generation settings follow the experiment's task_scores callback
            FIRST_WORD,
            "loss.enabled=false",
        ],
        script="eval.py",
    )
    return {"dir": folder, "train_output": trained.stdout + trained.stderr}


def assert_logged(per_task: dict, logged: dict) -> None:
    """Every score of ``per_task`` is in ``logged`` (validation metrics as logged: float32, so not bit for bit)."""
    for name, value in logged_scores(per_task).items():
        assert logged[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scores_after_training_equal_what_eval_py_reports_for_the_exported_model(run):
    summary = json.loads((run["dir"] / "run" / "summary.json").read_text())
    result = json.loads((run["dir"] / "eval" / "eval.json").read_text())
    after = summary["task_scores"]["after"]
    assert set(after) == {"classify", "flag", "revise", "summarize"}
    for task, values in after.items():
        assert values == result["per_task"][task], task  # every metric and count, exactly
    # the same answers, prompt by prompt: the last check (the restored best weights, as exported) against eval.py's
    last = jsonl(run["dir"] / "run" / "task_scores.jsonl")[-8:]
    eval_rows = jsonl(run["dir"] / "eval" / "generations.jsonl")
    assert [r["id"] for r in last] == [r["id"] for r in eval_rows]
    assert [r["generation"] for r in last] == [r["generation"] for r in eval_rows]
    assert any(r["generation"] for r in last)  # words, not only empty answers
    assert [r["tokens"] for r in last] == [r["tokens"] for r in eval_rows]
    assert (
        result["generation"]["tokens"]
        == sum(r["tokens"] for r in eval_rows)
        == summary["task_scores"]["checks"][-1]["tokens"]
    )


def test_scores_are_logged_as_validation_metrics_and_summarised_before_and_after(run):
    summary = json.loads((run["dir"] / "run" / "summary.json").read_text())
    scores = summary["task_scores"]
    expected = {"val/accuracy/classify", "val/parse_rate/flag", "val/rouge_l/revise", "val/rouge_l/summarize"}
    assert expected <= set(summary["val_after"])
    assert "val/n/classify" not in summary["val_after"]  # counts are not scores
    # before -> after: the validations lit_ft.fit runs before and after training
    assert_logged(scores["before"], summary["val_before"])
    assert_logged(scores["after"], summary["val_after"])
    assert scores["before"]["classify"]["parse_rate"] == 0.0 != scores["after"]["classify"]["parse_rate"]
    assert scores["prompts"] == 8 and scores["before"]["classify"]["n"] == 2  # 8 prompts, in turn from 4 task types
    # a check before training, one at each validation (every_validation), one after training
    assert [c["step"] for c in scores["checks"][:-1]] == [0, 5, 10, 15, 20]
    assert scores["tokens"] == sum(c["tokens"] for c in scores["checks"]) > 0
    rows = jsonl(run["dir"] / "run" / "task_scores.jsonl")
    assert len(rows) == 8 * len(scores["checks"])
    assert [sum(r["tokens"] for r in rows[i : i + 8]) for i in range(0, len(rows), 8)] == [
        c["tokens"] for c in scores["checks"]
    ]
    assert all(r["tokens"] <= 16 for r in rows)
    # the loggers get them with the other val/ metrics (here the CSV log; W&B is sent the same values)
    with next((run["dir"] / "run").glob("**/metrics.csv")).open() as handle:
        logged = list(csv.DictReader(handle))
    assert expected <= set(logged[0])
    assert len([row for row in logged if row[MONITOR]]) == 6  # before, 4 validations during fit, after
    # W&B gets the same values in its history, and the before/after table
    wandb_run = logged_run(next((run["dir"] / "run" / "wandb").glob("offline-run-*/run-*.wandb")))
    history = [row[MONITOR] for row in wandb_run["history"] if MONITOR in row]
    assert history == [float(row[MONITOR]) for row in logged if row[MONITOR]]
    assert any(row.get("task_scores/_type") == "table-file" for row in wandb_run["history"])
    # the log line with the cost, and the end-of-run table with before -> after
    assert "Task scores (step 0):" in run["train_output"] and "8 prompts," in run["train_output"]
    assert "task scores" in run["train_output"] and "8 held-out prompts, 6 checks" in run["train_output"]
    assert summary_value(summary, MONITOR) == pytest.approx(scores["after"]["classify"]["parse_rate"])


def test_early_stopping_monitors_a_task_score_logged_at_the_same_validation(run):
    summary = json.loads((run["dir"] / "run" / "summary.json").read_text())
    stopping = summary["early_stopping"]
    assert stopping["monitor"] == MONITOR
    # early stopping is listed before task_scores in lora_legal's callbacks, and still reads each check's score
    during = {step: value for step, value in summary["history"][MONITOR] if step > 0}
    assert len(set(during.values())) > 1, "the tiny model's parse rate should change between checks"
    assert stopping["best_score"] == max(during.values())
    assert stopping["best_step"] == min(step for step, value in during.items() if value == stopping["best_score"])
    assert stopping["restored_best"]
    # the weights exported (and scored after training) are those of the best check
    assert summary["task_scores"]["checks"][-1]["step"] == stopping["best_step"]
    assert summary["task_scores"]["after"]["classify"]["parse_rate"] == pytest.approx(stopping["best_score"])


def test_answers_and_their_token_counts_are_those_of_generate(tokenizer, tiny_model):
    """Each answer's cost is its generated tokens up to the end of its turn, as ``model.generate`` gives them."""
    prompts = prompts_from_records(list(read_records(REPO / "data" / "legal" / "val.jsonl")), 4)
    metrics = {"default": TextOverlap(metrics=["rouge_l"])}
    scored = generate_and_score(tiny_model, tokenizer, prompts, metrics, max_new_tokens=12, batch_size=4)
    for prompt, row in zip(prompts, scored.rows):
        ids = torch.tensor([prompt_ids(tokenizer, prompt)])
        output = tiny_model.generate(
            input_ids=ids,
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[0, ids.shape[1] :].tolist()
        answer = output[: output.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in output else output
        assert row["tokens"] == len(answer)
        assert row["generation"] == tokenizer.decode(answer, skip_special_tokens=True).strip()
    assert scored.tokens == sum(row["tokens"] for row in scored.rows)
    assert set(scored.per_task) == {p["task_type"] for p in prompts}


def test_logged_names_leave_out_counts():
    per_task = {"classify": {"n": 24, "accuracy": 0.5, "f1": 0.25}, "revise": {"n": 16, "rouge_l": 0.41}}
    assert logged_scores(per_task) == {
        "val/accuracy/classify": 0.5,
        "val/f1/classify": 0.25,
        "val/rouge_l/revise": 0.41,
    }


def test_bad_settings_and_data_without_references_are_refused():
    with pytest.raises(ValueError, match="needs task metrics"):
        TaskScores(metrics={})
    with pytest.raises(ValueError, match=r"metrics\['classify'\] is a dict, not a task metric"):
        TaskScores(metrics={"classify": {"_target_": "lit_ft.eval.LabelMetrics"}})
    with pytest.raises(ValueError, match="max_examples must be at least 1"):
        TaskScores(metrics={"default": TextOverlap()}, max_examples=0)
    callback = TaskScores(metrics={"default": LabelMetrics(pattern="x")})
    trainer = types.SimpleNamespace(datamodule=types.SimpleNamespace(val_records=lambda: []))
    with pytest.raises(ValueError, match="no prompt with a reference answer"):
        callback.setup(trainer, None, "fit")


def test_a_sweep_can_return_a_task_score():
    summary = {"val_loss_after": 1.5, "val_after": {"val/loss": 1.5, MONITOR: 0.75}}
    assert summary_value(summary, "val_loss_after") == 1.5
    assert summary_value(summary, MONITOR) == 0.75
    with pytest.raises(KeyError, match="optimized_metric=val/accuracy/flag: neither a key of summary.json"):
        summary_value(summary, "val/accuracy/flag")

"""Run-vs-run diff: reading eval.json and summary.json, directions, and the worst regression first."""

from __future__ import annotations

import json

import pytest

from lit_ft.eval.diff import diff_runs, load_run_metrics, main

EVAL_A = {
    "model": {"source": "base", "kind": "base"},
    "overall": {"loss": 1.0, "ppl": 2.718, "tokens": 100.0},
    "per_task": {
        "classify": {"loss": 0.5, "accuracy": 0.80, "f1": 0.70, "n": 10.0},
        "flag": {"loss": 1.0, "f1": 0.50},
        "summarize": {"loss": 2.0, "rouge_l": 0.40},
    },
    "forgetting": {"mcq_acc": 0.60, "prose_ppl": 20.0},
}
EVAL_B = {
    "model": {"source": "lora", "kind": "model"},
    "overall": {"loss": 0.9, "ppl": 2.46, "tokens": 100.0},
    "per_task": {
        "classify": {"loss": 0.6, "accuracy": 0.60, "f1": 0.70, "n": 10.0},  # loss +20%, accuracy -25%
        "flag": {"loss": 0.5, "f1": 0.55},  # better
        "summarize": {"loss": 2.0, "rouge_l": 0.40},
        "revise": {"rouge_l": 0.3},  # new task type
    },
    "forgetting": {"mcq_acc": 0.57, "prose_ppl": 22.0},  # -5%, +10%
}


def write(path, data):
    path.mkdir(parents=True, exist_ok=True)
    (path / "eval.json").write_text(json.dumps(data))
    return path


def test_regressions_come_first_in_the_metrics_own_direction(tmp_path):
    rows = diff_runs(load_run_metrics(write(tmp_path / "a", EVAL_A)), load_run_metrics(write(tmp_path / "b", EVAL_B)))
    ordered = [(r.task_type, r.metric) for r in rows]
    # relative change in the good direction: accuracy -25%, classify loss -20%, prose ppl -10%, mcq -5%
    assert ordered[:4] == [
        ("classify", "accuracy"),
        ("classify", "loss"),
        ("general", "prose_ppl"),
        ("general", "mcq_acc"),
    ]
    assert rows[0].delta == pytest.approx(-0.2) and rows[0].improvement == pytest.approx(-0.25)
    assert rows[1].improvement == pytest.approx(-0.2)  # loss went up: a regression
    flag_loss = next(r for r in rows if (r.task_type, r.metric) == ("flag", "loss"))
    assert flag_loss.improvement == pytest.approx(0.5)
    assert ordered[-1] == ("revise", "rouge_l") and rows[-1].a is None  # only in B: listed last
    assert ("classify", "n") not in ordered and ("all", "tokens") not in ordered  # counts are not compared


def test_training_summary_is_read_as_after_values(tmp_path):
    summary = {
        "val_loss_after": 1.5,
        "val_ppl_after": 4.48,
        "per_task": {"classify": {"val_loss_before": 3.0, "val_loss_after": 1.2, "val_tokens": 50.0}},
        "forgetting": {"baseline": {"mcq_acc": 0.6}, "final": {"mcq_acc": 0.55}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert load_run_metrics(tmp_path) == {
        "all": {"loss": 1.5, "ppl": 4.48},
        "classify": {"loss": 1.2},
        "general": {"mcq_acc": 0.55},
    }


def test_cli_prints_and_writes_rows(tmp_path, capsys):
    out = tmp_path / "diff.json"
    main([str(write(tmp_path / "a", EVAL_A)), str(write(tmp_path / "b", EVAL_B)), "--json", str(out)])
    printed = capsys.readouterr().out
    assert "classify" in printed and "-25.0%" in printed
    assert json.loads(out.read_text())[0]["metric"] == "accuracy"
    with pytest.raises(FileNotFoundError, match="neither eval.json nor summary.json"):
        load_run_metrics(tmp_path / "a" / "..")

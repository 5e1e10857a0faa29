"""Task metrics against hand computations, and the default mapping of the shipped legal validation set."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from lit_ft.config import ConfigError, validate_config
from lit_ft.eval import LabelMetrics, LabelParser, TextOverlap, exact_match, rouge_l, score_generations, token_f1
from tests.conftest import REPO
from tests.support.helpers import compose_config


def test_exact_match_and_token_f1_use_squad_normalisation():
    assert exact_match("The cat  sat.", "cat sat") == 1.0  # case, article, punctuation, spaces
    assert exact_match("cat sat on", "cat sat") == 0.0
    # words after normalisation: [cat, sat, on, mat] vs [cat, on, mat]: P = 3/4, R = 1, F1 = 2PR / (P + R)
    assert token_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(2 * 0.75 / 1.75)
    # house notation: the separator is punctuation, the bracketed parties become one word
    assert exact_match("OBL[Customer>Supplier] pay | TERM 30d", "OBL[Customer>Supplier] pay TERM 30d") == 1.0
    assert exact_match("OBL[Customer>Supplier] pay", "OBL[Supplier>Customer] pay") == 0.0


def test_rouge_l_is_longest_common_subsequence_f_measure():
    # LCS of [the cat sat on the mat] and [the cat is on the mat] is "the cat on the mat": P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-4)
    # same bag of words, reversed order: token F1 is 1 but the LCS has one word: P = R = 1/3
    assert token_f1("mat the on", "on the mat") == 1.0
    assert rouge_l("mat the on", "on the mat") == pytest.approx(1 / 3, abs=1e-4)
    assert rouge_l("", "on the mat") == 0.0


def test_text_overlap_averages_per_example_scores():
    metric = TextOverlap(["exact_match", "rouge_l"])
    examples = [metric.example("cat sat", "cat sat"), metric.example("mat the on", "on the mat")]
    assert examples[0] == {"exact_match": 1.0, "rouge_l": pytest.approx(1.0)}
    result = metric.aggregate(examples)
    assert result["n"] == 2 and result["exact_match"] == 0.5
    assert result["rouge_l"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="unknown text metrics"):
        TextOverlap(["bleu"])


def test_label_parser_takes_the_first_match_normalised():
    parser = LabelParser(r"TYPE:\s*([a-z_]+)")
    assert parser("I think TYPE: Force_Majeure. Or TYPE: payment") == "force_majeure"
    assert parser("payment") is None
    assert LabelParser("yes|no")("Yes, it is.") == "yes"  # no group: the whole match


def test_multiclass_accuracy_and_macro_scores_by_hand():
    metric = LabelMetrics(pattern=r"TYPE:\s*(\w+)")
    references = ["TYPE: a", "TYPE: a", "TYPE: b", "TYPE: c"]
    predictions = ["TYPE: a", "type: b", "TYPE: b", "no label here"]
    result = metric.aggregate([metric.example(p, r) for p, r in zip(predictions, references)])
    # per class (labels a, b, c): a P=1 R=1/2; b P=1/2 R=1; c P=0 R=0 (its one example was unparsed)
    assert result["accuracy"] == 0.5 and result["parse_rate"] == 0.75 and result["n"] == 4
    assert result["precision"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert result["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert result["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_binary_precision_recall_of_the_positive_label_by_hand():
    metric = LabelMetrics(pattern=r"FLAG:\s*(NON-STANDARD|STANDARD)", positive="NON-STANDARD")
    references = [
        "FLAG: NON-STANDARD - a",
        "FLAG: NON-STANDARD - b",
        "FLAG: STANDARD",
        "FLAG: STANDARD",
        "FLAG: NON-STANDARD - c",
    ]
    predictions = [
        "flag: non-standard, because",
        "FLAG: STANDARD",
        "FLAG: NON-STANDARD - x",
        "FLAG: STANDARD",
        "unsure",
    ]
    result = metric.aggregate([metric.example(p, r) for p, r in zip(predictions, references)])
    # TP = 1, FP = 1, FN = 2 (one wrong, one unparsed): P = 1/2, R = 1/3, F1 = 2PR / (P + R) = 0.4
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(0.4)
    assert result["accuracy"] == pytest.approx(2 / 5) and result["parse_rate"] == pytest.approx(4 / 5)


def test_unparsable_references_are_left_out_and_counted():
    metric = LabelMetrics(pattern=r"TYPE:\s*(\w+)")
    result = metric.aggregate([metric.example("TYPE: a", "TYPE: a"), metric.example("TYPE: a", "garbage")])
    assert result["n"] == 1 and result["unparsed_references"] == 1 and result["accuracy"] == 1.0


def test_score_generations_uses_the_task_metric_or_the_default():
    rows = [
        {"task_type": "classify", "generation": "TYPE: a", "reference": "TYPE: a"},
        {"task_type": "other", "generation": "x y", "reference": "x z"},
        {"task_type": "other", "generation": "free text", "reference": None},
    ]
    scores = score_generations(rows, {"classify": LabelMetrics(r"TYPE:\s*(\w+)"), "default": TextOverlap()})
    assert scores["classify"]["accuracy"] == 1.0
    assert scores["other"]["n"] == 1 and scores["other"]["token_f1"] == pytest.approx(0.5)
    assert rows[0]["scores"]["label"] == "a" and "scores" not in rows[2]


@pytest.mark.parametrize("split", ["val", "test"])
def test_legal_default_mapping_scores_the_shipped_references_perfectly(split):
    cfg = compose_config([], name="eval")
    metrics = {task: instantiate(metric) for task, metric in cfg.task_metrics.items()}
    rows = []
    for line in (REPO / "data" / "legal" / f"{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        answer = row["messages"][-1]["content"]
        rows.append({"task_type": row["task_type"], "generation": answer, "reference": answer})
    scores = score_generations(rows, metrics)
    assert set(scores) == {"classify", "flag", "revise", "summarize"}
    # every reference parses to a label of the configured set, so the label metrics are defined on all of them
    assert scores["classify"]["n"] == 24 and scores["classify"]["parse_rate"] == 1.0 and scores["classify"]["f1"] == 1.0
    assert scores["flag"]["n"] == 24 and scores["flag"]["f1"] == 1.0
    assert {k for k in scores["summarize"]} == {"n", "exact_match", "token_f1", "rouge_l"}
    assert scores["summarize"]["exact_match"] == 1.0 and scores["revise"]["rouge_l"] == pytest.approx(1.0)
    flags = {row["scores"]["reference_label"] for row in rows if row["task_type"] == "flag"}
    assert flags == {"standard", "non-standard"}


def test_task_metric_configs_are_validated_like_training_configs():
    validate_config(compose_config(["task_metrics=text"], name="eval"))
    with pytest.raises(ConfigError, match="task_metrics.flag.postive: not an option of lit_ft.eval.LabelMetrics"):
        validate_config(compose_config(["+task_metrics.flag.postive=x"], name="eval"))

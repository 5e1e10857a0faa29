"""The data report: counts per task type, truncation and drops as training does them, duplicates, short answers."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from lit_ft.eval.data_report import near_duplicate_pairs, shingles
from lit_ft.evaluate import report_data
from tests.conftest import chat, write_jsonl
from tests.support.helpers import compose_config

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
]
CLAUSE = "Summarize this clause: " + " ".join(WORDS)


@pytest.fixture
def report(tmp_path, tokenizer):
    train = [
        chat(CLAUSE, "OBL[A>B] pay", "summarize"),
        chat(CLAUSE.upper().replace(" ", "  "), "OBL[A>B] pay later", "summarize"),  # exact duplicate (case, spaces)
        chat(CLAUSE.replace("upsilon", "phi"), "OBL[A>B] pay now", "summarize"),  # near duplicate of both
        chat("Is it standard?", "Yes", "flag"),  # a one-token answer
        chat("Revise: short clause.", "REVISION: " + "word " * 200, "revise"),  # answer truncated, kept
        chat("Revise: " + "long " * 300, "REVISION: ok", "revise"),  # answer cut away: dropped
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}',  # invalid
    ]
    val = [chat(CLAUSE, "OBL[A>B] pay", "summarize"), chat("Is it standard? Tell me.", "FLAG: STANDARD", "flag")]
    cfg = compose_config(
        [
            "mode=data_report",
            "data=sft",
            f"data.train_files={write_jsonl(tmp_path / 'train.jsonl', train)}",
            f"data.val_files={write_jsonl(tmp_path / 'val.jsonl', val)}",
            "data.max_length=128",
        ],
        output_dir=tmp_path / "out",
        name="eval",
    )
    result = report_data(cfg)
    assert json.loads((tmp_path / "out" / "data_report.json").read_text()) == json.loads(json.dumps(result))
    return result


def test_counts_truncation_and_drops_per_task(report):
    train = report["splits"]["train"]
    assert (
        train["invalid_rows"] == 1
        and "train.jsonl:7: field 'messages[1].content': empty assistant turn" in train["invalid"][0]
    )
    revise = train["per_task"]["revise"]
    assert (revise["rows"], revise["examples"], revise["truncated"], revise["dropped_no_loss_tokens"]) == (2, 1, 1, 1)
    assert revise["truncated_tokens"] > 0 and revise["answer_tokens"]["max"] > 128  # lengths before truncation
    assert train["per_task"]["summarize"]["examples"] == 3 and report["max_length"] == 128


def test_token_lengths_split_prompt_and_answer(report, tokenizer):
    flag = report["splits"]["train"]["per_task"]["flag"]
    # answer tokens are the loss tokens: the answer and its end-of-turn token
    assert flag["answer_tokens"]["max"] == len(tokenizer("Yes", add_special_tokens=False)["input_ids"]) + 1
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Is it standard?"}, {"role": "assistant", "content": "Yes"}],
        tokenize=True,
        return_dict=False,
    )
    assert flag["prompt_tokens"]["max"] + flag["answer_tokens"]["max"] == len(full)
    assert flag["short_answers"] == 1 and flag["short_answer_rows"][0].endswith("train.jsonl:4")
    assert report["splits"]["val"]["per_task"]["flag"]["short_answers"] == 0


def test_exact_and_near_duplicates_within_and_across_splits(report):
    duplicates = report["duplicates"]
    assert duplicates["per_split"]["train"] == {"exact": {"summarize": 1}, "near": {"summarize": 1}}
    assert duplicates["cross_split"] == {"exact": 1, "near": 0}  # the first validation prompt is in training
    assert [(e["a"].rsplit("/", 1)[-1], e["b"].rsplit("/", 1)[-1]) for e in duplicates["exact_examples"]] == [
        ("train.jsonl:1", "train.jsonl:2"),
        ("train.jsonl:1", "val.jsonl:1"),
    ]
    near = duplicates["near_examples"]
    assert len(near) == 2 and near[0]["jaccard"] == pytest.approx(20 / 22, abs=1e-3)  # 23 words: 21 shingles, 20 shared


def test_prefix_filtered_pairs_equal_brute_force():
    rng = random.Random(0)
    sets = [frozenset(rng.sample(range(12), rng.randint(0, 8))) for _ in range(60)]
    for threshold in (0.3, 0.5, 0.8, 1.0):
        brute = {
            (i, j)
            for i, j in itertools.combinations(range(len(sets)), 2)
            if sets[i] and sets[j] and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold
        }
        assert {(i, j) for i, j, _ in near_duplicate_pairs(sets, threshold)} == brute


def test_shingles_are_word_ngrams():
    assert shingles("The cat, the HAT!", 3) == {("the", "cat", "the"), ("cat", "the", "hat")}
    assert shingles("Hi", 3) == {("hi",)}


def test_preference_pairs_are_reported_by_their_chosen_side(tmp_path):
    def pair(question: str, chosen: str, task: str) -> dict:
        return {
            "prompt": [{"role": "user", "content": question}],
            "chosen": chosen,
            "rejected": "no",
            "task_type": task,
        }

    rows = [pair("Classify: payment clause.", "TYPE: payment", "classify"), pair("Flag it?", "FLAG: STANDARD", "flag")]
    bad = {"prompt": [{"role": "user", "content": "q"}], "chosen": "same", "rejected": "same"}
    cfg = compose_config(
        [
            "mode=data_report",
            "data=preference",
            "module=dpo",
            f"data.train_files={write_jsonl(tmp_path / 'pairs.jsonl', [*rows, bad])}",
            "data.val_ratio=0",
        ],
        output_dir=tmp_path / "out",
        name="eval",
    )
    train = report_data(cfg)["splits"]["train"]
    assert {task: counts["rows"] for task, counts in train["per_task"].items()} == {"classify": 1, "flag": 1}
    assert (
        train["invalid_rows"] == 1 and "pairs.jsonl:3: field 'rejected': identical to 'chosen'" in train["invalid"][0]
    )

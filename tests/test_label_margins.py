"""Label margins: how well a model separates the two labels of a binary label task (lit_ft/eval/label_margins.py)."""

from __future__ import annotations

import json

import pytest
import torch

from lit_ft.data.readers import DataError
from lit_ft.data.tokenize import render_ids
from lit_ft.eval.label_margins import label_margins, labelled_prompts, separation
from lit_ft.models import tiny_llama
from tests.support.helpers import run_entry_point

POSITIVE, NEGATIVE = "FLAG: NON-STANDARD", "FLAG: STANDARD"


def flag_row(clause: str, answer: str, task_type: str = "flag") -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Classify this clause.\n\n{clause}"},
            {"role": "assistant", "content": "TYPE: payment"},
            {"role": "user", "content": "Should that clause be flagged?"},
            {"role": "assistant", "content": answer},
        ],
        "task_type": task_type,
    }


@pytest.fixture
def rows_file(tmp_path):
    rows = [
        flag_row("The Client shall pay within thirty days.", "FLAG: STANDARD"),
        flag_row("The Employer may reduce the salary at any time.", "FLAG: NON-STANDARD - unilateral reduction"),
        flag_row("The Client shall pay monthly.", "TYPE: payment", task_type="classify"),
        flag_row("The Provider may assign this agreement without consent.", "FLAG: NON-STANDARD"),
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer_logprob(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    """log p(answer | prompt) from one unpadded forward of prompt + answer."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, -1)
    return sum(float(logprobs[len(prompt_ids) + i - 1, token]) for i, token in enumerate(answer_ids))


def test_prompts_are_the_conversation_before_the_last_answer_and_labels_its_start(rows_file, tokenizer):
    prompts = labelled_prompts(rows_file, tokenizer, "flag", POSITIVE, NEGATIVE)
    assert [p.positive for p in prompts] == [False, True, True]  # the classify row is left out
    row = flag_row("The Employer may reduce the salary at any time.", "unused")
    expected = render_ids(tokenizer, row["messages"][:3], add_generation_prompt=True)
    assert tokenizer(prompts[1].prompt, add_special_tokens=False)["input_ids"] == expected


def test_a_reference_with_neither_label_is_refused_naming_the_row(rows_file, tokenizer):
    with pytest.raises(DataError, match=r"rows\.jsonl:3: the reference 'TYPE: payment' begins with neither"):
        labelled_prompts(rows_file, tokenizer, None, POSITIVE, NEGATIVE)
    with pytest.raises(ValueError, match="no rows of task type 'revise'"):
        labelled_prompts(rows_file, tokenizer, "revise", POSITIVE, NEGATIVE)


def test_margins_equal_the_log_probabilities_of_the_two_answers(rows_file, tokenizer, tiny_model):
    model = tiny_model.eval()
    prompts = [p.prompt for p in labelled_prompts(rows_file, tokenizer, "flag", POSITIVE, NEGATIVE)]
    margins = label_margins(model, tokenizer, prompts, POSITIVE, NEGATIVE, max_batch_tokens=100)
    for prompt, margin in zip(prompts, margins.tolist()):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        positive = tokenizer(prompt + POSITIVE, add_special_tokens=False)["input_ids"][len(ids) :]
        negative = tokenizer(prompt + NEGATIVE, add_special_tokens=False)["input_ids"][len(ids) :]
        assert tokenizer.decode(positive) == POSITIVE and tokenizer.decode(negative) == NEGATIVE
        expected = answer_logprob(model, ids, positive) - answer_logprob(model, ids, negative)
        assert margin == pytest.approx(expected, abs=1e-3)


def test_separation_against_a_hand_count():
    margins = torch.tensor([0.4, -0.2, 0.1, -0.5, 0.3], dtype=torch.float64)
    result = separation(margins, torch.tensor([True, True, False, False, False]))
    # positive 0.4 is above all 3 negatives, -0.2 above 1 of them: AUC 4/6
    assert result.auc == pytest.approx(4 / 6)
    assert (result.rows, result.positives) == (5, 2)
    assert result.accuracy_at_zero == pytest.approx(2 / 5)  # 0.4 and -0.5 right
    # calling positive only margins >= 0.4 gets all but -0.2 right; no threshold gets all 5
    assert (result.best_accuracy, result.best_threshold) == (pytest.approx(4 / 5), pytest.approx(0.4))
    with pytest.raises(ValueError, match="all 2 rows have the same label"):
        separation(margins[:2], torch.tensor([True, True]))


def test_the_command_prints_and_writes_the_separation(rows_file, tokenizer, tmp_path):
    folder = tmp_path / "model"
    tiny_llama(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "margins.json"
    result = run_entry_point(["lit_ft.eval.label_margins", str(folder), str(rows_file), "--json", str(out)], "-m")
    assert "best_accuracy" in result.stdout
    written = json.loads(out.read_text())
    assert (written["rows"], written["positives"]) == (3, 2) and 0 <= written["auc"] <= 1

"""Pairwise judge mechanics on the tiny model (both orders, symmetry), and the length-controlled win rate."""

from __future__ import annotations

import json

import pytest
import torch

from lit_ft.eval.judge import Comparison, PairwiseJudge, judge_files, length_controlled_win_rate, win_rates

COMPARISONS = [
    Comparison("Classify: The Tenant shall pay rent monthly.", "TYPE: payment", "TYPE: termination", "TYPE: payment"),
    Comparison("Is it standard?", "FLAG: STANDARD", "I do not know, it depends on many things.", None),
    Comparison("User: Summarise X.\nAssistant: S\nUser: Classify it.", "TYPE: a", "TYPE: a long answer", "TYPE: a"),
]


def test_swapping_the_models_gives_one_minus_the_preference(tokenizer, tiny_model):
    judge = PairwiseJudge(tiny_model, tokenizer, batch_size=4)
    forward = judge.compare(COMPARISONS)
    swapped = judge.compare([Comparison(c.request, c.b, c.a, c.reference) for c in COMPARISONS])
    torch.testing.assert_close(forward["preference"], 1 - swapped["preference"], atol=1e-6, rtol=0)
    # the order-averaged preference is the mean of P(a first wins) and P(a second wins)
    torch.testing.assert_close(forward["preference"], (forward["p_first_ab"] + 1 - forward["p_first_ba"]) / 2)
    assert ((forward["p_first_ab"] > 0) & (forward["p_first_ab"] < 1)).all()
    same = judge.compare([Comparison("q", "same answer", "same answer")])
    assert same["preference"].item() == pytest.approx(0.5, abs=1e-9)


def test_a_judge_that_always_picks_the_first_answer_is_cancelled(tokenizer, tiny_model):
    judge = PairwiseJudge(tiny_model, tokenizer)
    judge.p_first = lambda prompts: torch.full((len(prompts),), 0.9, dtype=torch.float64)
    result = judge.compare(COMPARISONS)
    assert torch.allclose(result["preference"], torch.full((3,), 0.5, dtype=torch.float64))


def test_the_judge_reads_the_letters_after_the_chat_template(tokenizer, tiny_model):
    judge = PairwiseJudge(tiny_model, tokenizer)
    ids = judge.prompt_ids(COMPARISONS[0], "FIRST-ANSWER", "SECOND-ANSWER")
    text = tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n") and text.index("FIRST-ANSWER") < text.index("SECOND-ANSWER")
    assert "[Reference answer]\nTYPE: payment" in text
    assert "[Reference answer]" not in tokenizer.decode(
        PairwiseJudge(tiny_model, tokenizer, use_reference=False).prompt_ids(COMPARISONS[0], "x", "y")
    )
    assert [tokenizer.decode([i]) for i in judge.letter_ids] == ["A", "B"]


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    # A's answers are mostly longer, and the judge prefers exactly by length: p = sigmoid(3 * tanh(d / std(d)))
    diff = torch.tensor([40.0] * 8 + [10.0] * 4 + [-30.0] * 4, dtype=torch.float64)
    p = torch.sigmoid(3 * torch.tanh(diff / diff.std()))
    assert p.mean() > 0.65  # the raw win rate rewards length
    lc = length_controlled_win_rate(p, diff + 100, torch.full_like(diff, 100.0))
    assert lc == pytest.approx(0.5, abs=0.01)
    # a length-independent preference survives: sigmoid(1) everywhere
    constant = torch.full_like(diff, torch.sigmoid(torch.tensor(1.0)).item())
    assert length_controlled_win_rate(constant, diff, torch.zeros_like(diff)) == pytest.approx(
        constant[0].item(), abs=1e-3
    )
    # equal lengths: no length information, the result is the logistic mean
    assert length_controlled_win_rate(constant, torch.ones(16), torch.ones(16)) == pytest.approx(
        constant[0].item(), abs=1e-3
    )


def test_win_rate_counts():
    preference = torch.tensor([0.9, 0.5, 0.2, 0.6], dtype=torch.float64)
    result = win_rates(preference, torch.ones(4), torch.ones(4))
    assert (result["wins"], result["ties"], result["losses"], result["n"]) == (2, 1, 1, 4)
    assert result["win_rate"] == pytest.approx(0.55)


def test_judge_files_pairs_generations_by_id(tokenizer, tiny_model, tmp_path):
    def write(name, answers):
        rows = [
            {
                "id": f"val.jsonl:{i}",
                "task_type": t,
                "messages": [{"role": "user", "content": f"q{i}"}],
                "reference": "r",
                "generation": a,
            }
            for i, (t, a) in enumerate(answers)
        ]
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    a = write("a.jsonl", [("x", "yes"), ("y", "no"), ("x", "maybe")])
    b = write("b.jsonl", [("x", "no"), ("y", "no"), ("x", "perhaps not")])
    report = judge_files(PairwiseJudge(tiny_model, tokenizer), a, b)
    assert report["overall"]["n"] == 3 and set(report["per_task"]) == {"x", "y"}
    assert report["per_task"]["y"]["win_rate"] == pytest.approx(0.5)  # identical answers tie exactly
    assert report["per_task"]["x"]["n"] == 2 and len(report["items"]) == 3
    assert -0.5 <= report["overall"]["position_bias"] <= 0.5

    repeated = write("repeated.jsonl", [("x", "yes"), ("y", "no")])
    repeated.write_text(repeated.read_text() * 2)  # two sources' rows with the same ids: pairing would lose one
    with pytest.raises(ValueError, match="val.jsonl:0, val.jsonl:1.*cannot be paired"):
        judge_files(PairwiseJudge(tiny_model, tokenizer), repeated, b)

"""The one truncation rule (cut, drop, no loss left), the split statistics that count it, and the loss-token count."""

from __future__ import annotations

import pytest
import torch

from lit_ft.data.batch import IGNORE_INDEX, loss_tokens
from lit_ft.data.stats import SplitStats
from lit_ft.data.truncation import truncate

X = IGNORE_INDEX
# 6 tokens: a 2-token prompt without loss, then a 4-token answer
PROMPT_ANSWER = {"input_ids": [1, 2, 3, 4, 5, 6], "labels": [X, X, 3, 4, 5, 6]}


def test_an_example_that_fits_is_kept_whole():
    result = truncate([PROMPT_ANSWER], 6, "right")
    assert result.kept and result.sequences == (PROMPT_ANSWER,)
    assert (result.cut_tokens, result.tokens, result.loss_tokens) == (0, 6, 4)


@pytest.mark.parametrize(
    ("policy", "input_ids", "labels", "loss"),
    [("right", [1, 2, 3, 4], [X, X, 3, 4], 2), ("left", [3, 4, 5, 6], [3, 4, 5, 6], 4)],
)
def test_right_keeps_the_start_and_left_the_end(policy, input_ids, labels, loss):
    result = truncate([PROMPT_ANSWER], 4, policy)
    assert result.kept and result.sequences[0] == {"input_ids": input_ids, "labels": labels}
    assert (result.cut_tokens, result.tokens, result.loss_tokens) == (2, 4, loss)
    assert PROMPT_ANSWER["input_ids"] == [1, 2, 3, 4, 5, 6]  # the input is not cut in place


def test_drop_reasons():
    assert truncate([PROMPT_ANSWER], 5, "drop").dropped == "too_long"
    assert truncate([PROMPT_ANSWER], 6, "drop").kept
    assert truncate([PROMPT_ANSWER], 2, "right").dropped == "no_loss_tokens"  # only the prompt is left
    assert truncate([PROMPT_ANSWER], 2, "left").kept


def test_a_pair_lives_or_dies_together():
    chosen = {"input_ids": [1, 2, 3], "labels": [X, 2, 3]}
    rejected = {"input_ids": [1, 2, 7, 8, 9], "labels": [X, X, X, 8, 9]}
    kept = truncate([chosen, rejected], 4, "left")  # rejected loses its first token
    assert kept.kept and kept.sequences == (chosen, {"input_ids": [2, 7, 8, 9], "labels": [X, X, 8, 9]})
    assert (kept.cut_tokens, kept.tokens, kept.loss_tokens) == (1, 7, 4)
    assert truncate([chosen, rejected], 3, "right").dropped == "no_loss_tokens"  # rejected keeps no answer token
    assert truncate([chosen, rejected], 4, "drop").dropped == "too_long"


def test_split_stats_count_each_outcome_once():
    stats = SplitStats()
    stats.count(truncate([PROMPT_ANSWER], 6, "right"), "a")  # kept whole: 6 tokens, 4 with loss
    stats.count(truncate([PROMPT_ANSWER], 4, "left"), "b")  # kept, 2 tokens cut: 4 tokens, 4 with loss
    stats.count(truncate([PROMPT_ANSWER], 2, "right"), "a")  # dropped: no loss tokens left
    stats.count(truncate([PROMPT_ANSWER], 5, "drop"), "a")  # dropped: too long
    stats.count_unused_rows(3)
    stats.note_missing_task_types({"z", "c"})
    assert stats.to_dict() == {
        "rows": 4,
        "examples": 2,
        "tokens": 10,
        "loss_tokens": 8,
        "truncated_examples": 1,
        "truncated_tokens": 2,
        "dropped_too_long": 1,
        "dropped_no_loss_tokens": 1,
        "documents_split": 0,
        "blocks": 0,
        "unused_rows": 3,
        "filtered_rows": {},
        "examples_per_task": {"a": 1, "b": 1},
        "task_types_missing": ["c", "z"],
        "sources": {},
    }


def test_split_stats_count_sources():
    stats = SplitStats()
    stats.count_sources(["legal", "general"], [3.0, 1.0], [10, 4], [6, 2], [30, 10])
    assert stats.sources == {
        "legal": {"weight": 0.75, "examples": 10, "drawn": 6, "loss_token_share": 0.75},
        "general": {"weight": 0.25, "examples": 4, "drawn": 2, "loss_token_share": 0.25},
    }


def test_loss_tokens_of_an_example_and_of_a_batch():
    assert int(loss_tokens(PROMPT_ANSWER["labels"])) == 4
    assert int(loss_tokens([])) == 0
    labels = torch.tensor([[5, 6, X, 7], [8, X, X, X]])
    assert loss_tokens(labels).item() == 4
    assert loss_tokens(labels[:, 1:], dim=-1).tolist() == [2, 0]  # shifted targets: position 0 is never one

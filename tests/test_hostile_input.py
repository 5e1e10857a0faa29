"""Hostile and broken input: every bad row stops the run at start naming file, line and field; whatever is dropped is
counted in the summary. Property-based tests check the label-mask invariants of ``tokenize_conversation``.

Covered in test_data.py and not repeated here: malformed JSON, unknown roles, an assistant turn first, non-string
content, empty assistant turns, a missing completion, a misspelt format field, non-object rows, invalid UTF-8, and
conversations longer than ``max_length`` (truncated or dropped, and counted).
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lit_ft.data import DataError, PreferenceDataModule, SFTDataModule
from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.tokenize import tokenize_conversation
from lit_ft.run import train
from tests.conftest import REPO, chat, write_jsonl
from tests.support.helpers import compose_config
from tests.test_tokenize import labelled_segments


def setup_error(tokenizer, path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        SFTDataModule(tokenizer, path, max_length=64, **kwargs).setup("fit")
    return info.value


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_a_clear_error(tmp_path, tokenizer, content):
    (tmp_path / "empty.jsonl").write_text(content)
    error = setup_error(tokenizer, tmp_path / "empty.jsonl")
    assert str(error) == f"{tmp_path / 'empty.jsonl'}: the file holds no rows (it is empty or has only blank lines)"
    good = write_jsonl(tmp_path / "train.jsonl", [chat("q", "a")])
    assert "empty.jsonl: the file holds no rows" in str(
        setup_error(tokenizer, good, val_files=tmp_path / "empty.jsonl")
    )


USER, ANSWER = {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"messages": [{"role": "user"}, ANSWER]}, "messages[0].content", "content must be a string, got NoneType"),
        ({"messages": [{"content": "x"}, ANSWER]}, "messages[0].role", "unknown role None"),
        ({"messages": "x"}, "messages", "expected a non-empty list of messages"),
        ({"messages": []}, "messages", "expected a non-empty list of messages"),
        ({"messages": [USER, USER, ANSWER]}, "messages[1].role", "expected a assistant turn, got user"),
        ({"messages": [USER, ANSWER, {"role": "system", "content": "s"}]}, "messages[2].role", "only come first"),
        ({"messages": [USER, {"role": "assistant", "content": "y<|im_end|>"}]}, "messages[1].content", "control token"),
        ({"messages": [{"role": "user", "content": "<|im_start|>system"}, ANSWER]}, "messages[0].content", "control"),
        ({"text": "a<|endoftext|>b"}, "text", "control token '<|endoftext|>'"),
        ({"prompt": "p", "completion": 7}, "completion", "expected a string or a list of messages, got int"),
        ({"prompt": [USER, ANSWER], "completion": [USER]}, "completion", "no assistant message"),
        (json.dumps(chat("q", "a")) + json.dumps(chat("q", "a")), None, "malformed JSON: Extra data"),  # lost newline
    ],
)
def test_bad_rows_stop_setup_with_file_line_and_field(tmp_path, tokenizer, row, field, message):
    path = write_jsonl(tmp_path / "train.jsonl", [chat("fine", "row"), row, chat("fine", "row")])
    error = setup_error(tokenizer, path)
    assert (error.where, error.field) == (f"{path}:2", field)
    assert message in str(error)


CALL = {"type": "function", "function": {"name": "lookup", "arguments": {"clause": 7}}}
CALLER = {"role": "assistant", "content": "", "tool_calls": [CALL]}
TOOL = {"role": "tool", "content": "clause 7: payment"}
HUMAN, GPT = {"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [  # issue 16's formats: an unknown role, a tool output without a call, bad tools, broken ShareGPT, empty answers
        ({"messages": [USER, {"role": "bot", "content": "y"}]}, "messages[1].role", "unknown role 'bot'"),
        ({"conversations": [HUMAN, {"from": "bot", "value": "y"}]}, "conversations[1].from", "unknown role 'bot'"),
        ({"messages": [USER, TOOL, ANSWER]}, "messages[1].role", "a tool message must follow an assistant's tool call"),
        ({"messages": [USER, ANSWER, TOOL]}, "messages[2].role", "a tool message must follow an assistant's tool call"),
        ({"messages": [USER, CALLER, ANSWER]}, "messages[2].role", "expected a tool turn, got assistant"),
        (
            {"messages": [USER, {**CALLER, "tool_calls": [{"function": {}}]}, TOOL, ANSWER]},
            "messages[1].tool_calls[0].function.name",
            "needs the function's name",
        ),
        ({"messages": [USER, ANSWER], "tools": [{"name": "lookup"}]}, "tools[0]", 'expected {"type": "function"'),
        (
            {"messages": [USER, ANSWER], "tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
            "a function schema needs a name",
        ),
        (
            {"messages": [USER, ANSWER], "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
            "parameters must be a JSON schema of type 'object'",
        ),
        ({"messages": [USER, ANSWER], "tools": "[{"}, "tools", "not valid JSON"),
        (
            {"messages": [USER, CALLER, TOOL, ANSWER], "tools": [{"type": "function", "function": {"name": "search"}}]},
            "messages[1].tool_calls[0].function.name",
            "calls 'lookup', which 'tools' does not offer (search)",
        ),
        ({"conversations": [HUMAN, HUMAN, GPT]}, "conversations[1].from", "expected a assistant turn, got user"),
        ({"conversations": [GPT, HUMAN]}, "conversations[0].from", "expected a user turn, got assistant"),
        ({"conversations": [HUMAN, GPT, GPT]}, "conversations[2].from", "expected a user turn, got assistant"),
        ({"prompt": "p", "completion": "  "}, "completion", "empty completion"),
        (
            {"conversations": [HUMAN, {"from": "function_call", "value": "{"}]},
            "conversations[1].value[0]",
            "not valid JSON",
        ),
        (
            {"prompt": [USER], "completion": [{"role": "assistant", "content": ""}]},
            "completion[0].content",
            "empty assistant turn",
        ),
        ({"instruction": "x", "input": "", "output": ""}, "output", "empty completion"),
        ({"conversations": [HUMAN, {"from": "gpt", "value": " "}]}, "conversations[1].value", "empty assistant turn"),
    ],
)
def test_bad_rows_of_each_format_stop_setup_with_file_line_and_field(tmp_path, tokenizer, row, field, message):
    path = write_jsonl(tmp_path / "train.jsonl", [chat("fine", "row"), row])
    error = setup_error(tokenizer, path)
    assert (error.where, error.field) == (f"{path}:2", field)
    assert message in str(error)


PAIR = {"prompt": [USER], "chosen": "TYPE: payment", "rejected": "about payment"}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({**PAIR, "chosen": "TYPE: payment<|im_end|>"}, "chosen"),  # a string answer
        ({**PAIR, "rejected": [{"role": "assistant", "content": "<|im_start|>x"}]}, "rejected[0].content"),
        ({**PAIR, "prompt": [{"role": "user", "content": "x<|endoftext|>"}]}, "prompt[0].content"),
        ({"prompt": "p<|im_end|>", "chosen": "a", "rejected": "b"}, "prompt"),  # text pairs
        ({"chosen": [USER, {**ANSWER, "content": "<|im_end|>"}], "rejected": [USER, ANSWER]}, "chosen[1].content"),
    ],
)
def test_control_tokens_in_preference_rows_stop_setup_like_sft_rows(tmp_path, tokenizer, row, field):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, row])
    with pytest.raises(DataError) as info:
        PreferenceDataModule(tokenizer, path, max_length=64).setup("fit")
    assert (info.value.where, info.value.field) == (f"{path}:2", field) and "control token" in str(info.value)


def test_huge_lines(tmp_path, tokenizer):
    # a 3 MB line that is not JSON fails fast with its line number
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(chat("q", "a")) + "\n" + '{"messages": [' + "x" * 3_000_000 + "\n")
    assert setup_error(tokenizer, path).where == f"{path}:2"
    # a 300 kB answer is read, tokenised and truncated to max_length, and counted as truncated
    write_jsonl(path, [chat("q", "a"), chat("Summarise.", "clause " * 50_000)])
    dm = SFTDataModule(tokenizer, path, max_length=64)
    dm.setup("fit")
    stats = dm.stats["train"]
    assert (stats.rows, stats.examples, stats.truncated_examples) == (2, 2, 1) and stats.truncated_tokens > 40_000
    assert max(len(e["input_ids"]) for e in dm.train_examples) == 64


def test_a_task_type_missing_from_validation_is_warned_and_counted(tmp_path, tokenizer, caplog):
    train_file = write_jsonl(tmp_path / "train.jsonl", [chat("q1", "a", "flag"), chat("q2", "b", "classify")])
    val_file = write_jsonl(tmp_path / "val.jsonl", [chat("q3", "c", "flag")])
    dm = SFTDataModule(tokenizer, train_file, val_files=val_file)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "Task types with no validation examples: classify" in caplog.text
    assert dm.stats["val"].to_dict()["task_types_missing"] == ["classify"]
    assert "no examples of task types classify" in dm.stats["val"].describe("val")


def test_a_corrupted_line_in_the_legal_data_stops_the_run_at_start(tmp_path):
    corrupted = tmp_path / "train.jsonl"
    shutil.copy(REPO / "data" / "legal" / "train.jsonl", corrupted)
    lines = corrupted.read_text().splitlines(keepends=True)
    lines[179] = lines[179][: len(lines[179]) // 2] + "\n"  # line 180 of 359, cut in the middle
    corrupted.write_text("".join(lines))
    cfg = compose_config(
        [
            "data=legal",
            f"data.train_files={corrupted}",
            "model._target_=tests.support.faults.refuse_to_load",
            "logger=none",
        ],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(DataError, match=rf"^{corrupted}:180: malformed JSON: "):
        train(cfg)


# --- label-mask invariants of tokenize_conversation, on random conversations ----------------------------------
CONTROL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")  # refused in data (see above)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30).filter(
    lambda s: s.strip() and not any(token in s for token in CONTROL_TOKENS)
)


@st.composite
def conversations(draw) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": draw(TEXT)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(TEXT)}, {"role": "assistant", "content": draw(TEXT)}]
    return messages


def starts_a_token(tokenizer, answer: str) -> bool:
    """Whether the chat template's newline before ``answer`` (``assistant\n``) tokenises apart from it."""
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return (
        tokenizer("\n" + answer, add_special_tokens=False)["input_ids"]
        == newline + tokenizer(answer, add_special_tokens=False)["input_ids"]
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations())
def test_label_mask_invariants(tokenizer, messages):
    example = tokenize_conversation(tokenizer, messages)
    # 1. input_ids are the chat template's own tokenisation
    assert example["input_ids"] == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    # 2. a label is either ignored or the token itself (labelled_segments asserts it)
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(example["input_ids"], example["labels"]))
    # 3. the labelled runs are exactly each assistant turn's content tokens followed by the end-of-turn token,
    # wherever the template's newline before the content stays a token of its own (else see the test below)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assume(all(starts_a_token(tokenizer, answer) for answer in answers))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = [tokenizer(a, add_special_tokens=False)["input_ids"] + [end_of_turn] for a in answers]
    assert labelled_segments(example) == expected
    # ... so they decode to the content itself wherever the tokenizer can represent it (its byte-level vocabulary
    # lacks a few bytes, so some rare code points do not survive tokenisation at all)
    for segment, answer in zip(labelled_segments(example), answers):
        if tokenizer.decode(tokenizer(answer, add_special_tokens=False)["input_ids"]) == answer:
            assert tokenizer.decode(segment) == answer + "<|im_end|>"


def test_a_token_fusing_the_template_with_the_answer_is_not_labelled(tokenizer):
    # " \r0" after the template's "assistant\n": the newline and the answer's leading space make one token, "\n ",
    # which is half prompt: it stays unlabelled, and the labels start at the first token wholly in the answer
    messages = [{"role": "user", "content": "0"}, {"role": "assistant", "content": " \r0"}]
    assert not starts_a_token(tokenizer, " \r0")
    example = tokenize_conversation(tokenizer, messages)
    fused = tokenizer("\n ", add_special_tokens=False)["input_ids"]
    assert len(fused) == 1 and fused[0] in example["input_ids"]
    assert example["labels"][example["input_ids"].index(fused[0])] == IGNORE_INDEX
    (segment,) = labelled_segments(example)
    assert tokenizer.decode(segment) == "\r0<|im_end|>"

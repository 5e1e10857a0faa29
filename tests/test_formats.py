"""Row formats (issue 16, item 2): each recognised by its fields, named, read into the same examples as its
``messages`` spelling; tool calls labelled exactly under a tool-rendering template; unpaired preference rows; every
SFT format trained by ``train.py``."""

from __future__ import annotations

import copy
import json

import pytest

from lit_ft.data import DataError, SFTDataModule, read_records
from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.formats import detect_format, parse_sft_row
from lit_ft.data.preference_rows import UnpairedPreference, parse_preference_row, parse_unpaired_row
from lit_ft.data.readers import Record
from lit_ft.data.rows import ChatExample, TextExample
from lit_ft.data.tokenize import tokenize_conversation, tokenize_example, tokenize_unpaired
from tests.conftest import write_jsonl
from tests.support.helpers import run_entry_point
from tests.support.tool_template import TOOL_TEMPLATE
from tests.test_tokenize import labelled_segments

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "content": "18C, sunny"},
    {"role": "assistant", "content": "18C and sunny."},
]
USER, ANSWER = {"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}
SYSTEM = {"role": "system", "content": "Be brief."}


def read(row: dict) -> Record:
    return Record("rows.jsonl:1", row)


@pytest.fixture
def tool_tokenizer(tokenizer):
    """The real SmolLM2 tokenizer with a Qwen2.5-style template that renders ``tools`` and tool calls."""
    tool_tokenizer = copy.copy(tokenizer)
    tool_tokenizer.chat_template = TOOL_TEMPLATE
    return tool_tokenizer


@pytest.mark.parametrize(
    ("row", "name", "example"),
    [
        ({"messages": [SYSTEM, USER, ANSWER]}, "messages", ChatExample([SYSTEM, USER, ANSWER], (2,), "default")),
        (
            {"messages": TOOL_CHAT, "tools": [WEATHER], "task_type": "tools"},
            "messages",
            ChatExample(TOOL_CHAT, (1, 3), "tools", [WEATHER]),
        ),
        (
            {"conversations": [{"from": "human", "value": "What is 2 plus 3?"}, {"from": "gpt", "value": "5"}]},
            "sharegpt",
            ChatExample([USER, ANSWER], (1,), "default"),
        ),
        (  # a function_call's value is the JSON call (arguments as a JSON string too), tools a JSON string
            {
                "system": "Be brief.",
                "conversations": [
                    {"from": "human", "value": "Weather in Paris?"},
                    {
                        "from": "function_call",
                        "value": '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
                    },
                    {"from": "tool", "value": "18C, sunny"},
                    {"from": "gpt", "value": "18C and sunny."},
                ],
                "tools": json.dumps([WEATHER]),
            },
            "sharegpt",
            ChatExample([SYSTEM, *TOOL_CHAT], (2, 4), "default", [WEATHER]),
        ),
        (
            {"instruction": "Add the numbers.", "input": "2, 3", "output": "5", "system": "Be brief."},
            "alpaca",
            ChatExample([SYSTEM, {"role": "user", "content": "Add the numbers.\n\n2, 3"}, ANSWER], (2,), "default"),
        ),
        (
            {"instruction": "What is 2 plus 3?", "input": "", "output": "5", "task_type": "add"},
            "alpaca",
            ChatExample([USER, ANSWER], (1,), "add"),
        ),
        (
            {"prompt": "2 plus 3 is", "completion": " 5"},
            "prompt/completion",
            TextExample("2 plus 3 is", " 5", "default"),
        ),
        (
            {"prompt": [SYSTEM, USER], "completion": [ANSWER]},
            "prompt/completion",
            ChatExample([SYSTEM, USER, ANSWER], (2,), "default"),
        ),
        ({"text": "Raw text."}, "text", TextExample("", "Raw text.", "default")),
        (  # a label column of a chat dataset's own does not make it an unpaired preference row
            {"messages": [USER, ANSWER], "label": False},
            "messages",
            ChatExample([USER, ANSWER], (1,), "default"),
        ),
    ],
)
def test_each_sft_format_is_recognised_named_and_read(row, name, example):
    assert detect_format(read(row)) == name
    assert parse_sft_row(read(row)) == example


def test_preference_formats_are_named_and_refused_by_sft():
    implicit = {"chosen": [USER, ANSWER], "rejected": [USER, {"role": "assistant", "content": "6"}]}
    unpaired = {"prompt": [USER], "completion": "5", "label": True}
    assert (detect_format(read(implicit)), detect_format(read(unpaired))) == ("preference", "unpaired preference")
    with pytest.raises(DataError, match="a row of format 'preference' is for a preference loss, not SFT"):
        parse_sft_row(read(implicit))
    with pytest.raises(DataError, match="a row of format 'unpaired preference' is for a preference loss"):
        parse_sft_row(read(unpaired))
    pair = parse_preference_row(read(implicit))  # the longest common message prefix is the prompt
    assert pair.chosen.messages == [USER, ANSWER] and pair.chosen.trainable_turns == (1,)
    assert pair.rejected.messages[1]["content"] == "6" and pair.rejected.trainable_turns == (1,)


def test_a_row_of_no_format_names_the_formats_tried(tmp_path):
    with pytest.raises(DataError) as info:
        parse_sft_row(read({"question": "q", "answer": "a"}))
    assert str(info.value) == (
        "rows.jsonl:1: unknown row format with fields ['answer', 'question']; tried unpaired preference ('prompt', "
        "'completion' and a boolean 'label'); preference ('chosen' and 'rejected'); messages ('messages'); sharegpt "
        "('conversations'); alpaca ('instruction' and 'output'); prompt/completion ('prompt' and 'completion'); "
        "text ('text')"
    )


def test_a_tool_call_is_labelled_and_the_tool_output_is_not(tool_tokenizer):
    example = tokenize_conversation(tool_tokenizer, TOOL_CHAT, tools=[WEATHER])
    text = tool_tokenizer.decode(example["input_ids"])
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text  # the tools were rendered
    assert "<tool_response>\n18C, sunny\n</tool_response>" in text
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    ids = [tool_tokenizer(span, add_special_tokens=False)["input_ids"] for span in (call, "18C and sunny.<|im_end|>")]
    assert labelled_segments(example) == ids  # exactly the call and the answer, each with its end-of-turn token
    assert sum(label != IGNORE_INDEX for label in example["labels"]) == len(ids[0]) + len(ids[1])


def test_the_data_module_passes_the_tools_column_to_the_template(tmp_path, tool_tokenizer):
    path = write_jsonl(tmp_path / "tools.jsonl", [{"messages": TOOL_CHAT, "tools": [WEATHER]}])
    dm = SFTDataModule(tool_tokenizer, path, val_files=path, max_length=512)
    dm.setup("fit")
    expected = tokenize_conversation(tool_tokenizer, TOOL_CHAT, tools=[WEATHER])
    [example] = dm.train_examples
    assert (example["input_ids"], example["labels"]) == (expected["input_ids"], expected["labels"])


@pytest.mark.parametrize("label", [True, False])
def test_an_unpaired_preference_row_is_a_typed_example(tokenizer, label):
    row = {"prompt": [USER], "completion": "5", "label": label, "task_type": "add"}
    unpaired = parse_unpaired_row(read(row))
    assert unpaired == UnpairedPreference(ChatExample([USER, ANSWER], (1,), "add"), label, "add")
    example = tokenize_unpaired(tokenizer, unpaired)
    tokens = tokenize_example(tokenizer, unpaired.example)
    assert example == {**tokens, "task_type": "add", "label": label}
    assert [tokenizer.decode(s) for s in labelled_segments(example)] == ["5<|im_end|>"]
    text = parse_unpaired_row(read({"prompt": "2 plus 3 is", "completion": " 5", "label": False}))
    assert text == UnpairedPreference(TextExample("2 plus 3 is", " 5", "default"), False, "default")
    with pytest.raises(DataError) as info:
        parse_unpaired_row(read({**row, "label": 1}))
    assert (info.value.field, str(info.value)) == ("label", "rows.jsonl:1: field 'label': must be true or false, got 1")


def sums(count: int) -> list[tuple[str, str]]:
    return [(f"What is {a} plus 3?", f"{a + 3}") for a in range(count)]


FORMAT_ROWS = {
    "messages": lambda q, a: {
        "messages": [
            {"role": "user", "content": q},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "content": a},
            {"role": "assistant", "content": a},
        ],
        "tools": [WEATHER],
    },
    "sharegpt": lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
    "alpaca": lambda q, a: {"instruction": q, "input": "", "output": a},
    "prompt/completion": lambda q, a: {"prompt": q, "completion": " " + a},
    "text": lambda q, a: {"text": f"{q} {a}"},
    "preference": lambda q, a: {  # an implicit prompt: the conversations' shared first message
        "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
        "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": a + "0"}],
    },
}
# The experiment that trains each format: SFT, and DPO for preference rows.
EXPERIMENT = dict.fromkeys(FORMAT_ROWS, "sft_legal") | {"preference": "dpo_legal"}
EXTRA_OVERRIDES = {  # a short forgetting check (SFT); one pass over the 4 pairs, not dpo_legal's 64 samples (DPO)
    "sft_legal": ["callbacks.forgetting.max_questions=4", "callbacks.forgetting.max_passages=1"],
    "dpo_legal": ["data.train_samples=4"],
}


@pytest.mark.parametrize("name", FORMAT_ROWS)
def test_train_py_trains_on_each_format(tmp_path, name):
    rows = [FORMAT_ROWS[name](q, a) for q, a in sums(6)]
    train_file, val_file = (
        write_jsonl(tmp_path / "train.jsonl", rows[:4]),
        write_jsonl(tmp_path / "val.jsonl", rows[4:]),
    )
    assert {detect_format(record) for record in read_records(train_file)} == {name}
    run_entry_point(
        [
            f"experiment={EXPERIMENT[name]}",
            "debug=tiny",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "data.batch_size=2",
            f"paths.log_dir={tmp_path / 'logs'}",
            *EXTRA_OVERRIDES[EXPERIMENT[name]],
            # raw text has no prompts to answer: sft_legal's task scores refuse it, naming the fix (this one)
            *(["callbacks.task_scores=null"] if name == "text" else []),
        ]
    )
    summary = json.loads((tmp_path / "logs" / "debug_tiny" / "summary.json").read_text())
    assert (summary["data"]["train"]["examples"], summary["data"]["val"]["examples"]) == (4, 2)
    assert summary["optimizer_steps"] == 2

"""``data.chat_template`` (issue 16, item 3): built-in templates, files and Jinja text set on the data's tokenizer,
exported with the model and used by eval.py; assistant-only labels exact under templates that render a conversation
prefix differently from the whole conversation (reasoning dropped from earlier turns)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lit_ft.data import SFTDataModule
from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.chat_templates import built_in_templates, read_chat_template, with_chat_template
from lit_ft.data.readers import DataError
from lit_ft.data.tokenize import render_text, tokenize_conversation
from lit_ft.eval.loading import load_eval_model
from lit_ft.evaluate import build_datamodule
from lit_ft.run import train
from tests.conftest import write_jsonl
from tests.support.helpers import REPO, compose_config, run_entry_point
from tests.test_tokenize import MULTI_TURN, labelled_segments

# Qwen3's way with reasoning, cut down: an assistant turn's `<think>` block is rendered in the last turn only, so
# `messages[:3]` renders turn 2 with its reasoning and the whole conversation renders it without.
REASONING_TEMPLATE = """\
{%- for message in messages %}
    {%- if message.role == 'assistant' %}
        {%- set content = message.content %}
        {%- set reasoning = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
        {%- endif %}
        {%- if loop.last %}
            {{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}
        {%- else %}
            {{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""
REASONING_CHAT = [
    {"role": "system", "content": "You are a careful lawyer."},
    {"role": "user", "content": "Classify: The Supplier shall indemnify the Customer."},
    {"role": "assistant", "content": "<think>\nIt moves a loss to the Supplier.\n</think>\n\nTYPE: indemnity"},
    {"role": "user", "content": "Is it standard?"},
    {"role": "assistant", "content": "<think>\nMarket practice.\n</think>\n\nFLAG: STANDARD"},
]
# A template that refuses some conversations, as many do (Gemma's: no system role).
SYSTEMLESS_TEMPLATE = """\
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {{- raise_exception('System role not supported') }}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endfor %}
"""


def labelled_texts(tokenizer, example: dict) -> list[str]:
    return [tokenizer.decode(segment) for segment in labelled_segments(example)]


def test_built_in_templates_are_shipped_and_read_by_name_file_or_text(tmp_path):
    assert {"chatml", "llama3", "zephyr"} <= set(built_in_templates())
    chatml = (REPO / "lit_ft/data/templates/chatml.jinja").read_text()
    assert read_chat_template("chatml") == chatml
    (tmp_path / "mine.jinja").write_text(REASONING_TEMPLATE)
    assert read_chat_template(str(tmp_path / "mine.jinja")) == REASONING_TEMPLATE
    assert read_chat_template(REASONING_TEMPLATE) == REASONING_TEMPLATE
    with pytest.raises(ValueError, match=r"data.chat_template='chatlm' is not a built-in template \(chatml, "):
        read_chat_template("chatlm")


def test_the_template_is_set_on_a_copy_and_a_broken_one_fails_at_once(tokenizer):
    own = tokenizer.chat_template
    llama3 = with_chat_template(tokenizer, "llama3")
    assert llama3 is not tokenizer and tokenizer.chat_template == own  # the caller's tokenizer is left alone
    assert llama3.chat_template == read_chat_template("llama3")
    assert with_chat_template(tokenizer, None) is tokenizer
    with pytest.raises(ValueError, match=r"data.chat_template='\{\{ messages\[0\]\.content \| nofilter }}' cannot"):
        with_chat_template(tokenizer, "{{ messages[0].content | nofilter }}")


@pytest.mark.parametrize(
    ("template", "answers"),
    [
        ("chatml", ["TYPE: indemnity<|im_end|>", "FLAG: STANDARD<|im_end|>"]),
        # Llama 3's markers are not in SmolLM2's vocabulary but text, whose tokens need not end where a turn does:
        # `<|eot_id|><|start_header_id|>` has the token `><`, which the model writes to end turn 2, so it is labelled
        ("llama3", ["TYPE: indemnity<|eot_id|><", "FLAG: STANDARD<|eot_id|>"]),
        # zephyr ends a turn with the tokenizer's EOS, SmolLM2's <|im_end|>
        ("zephyr", ["TYPE: indemnity<|im_end|>", "FLAG: STANDARD<|im_end|>"]),
    ],
)
def test_built_in_templates_label_exactly_each_answer_and_its_end_of_turn(tokenizer, template, answers):
    templated = with_chat_template(tokenizer, template)
    example = tokenize_conversation(templated, MULTI_TURN)
    text = render_text(templated, MULTI_TURN)
    assert example["input_ids"] == templated(text, add_special_tokens=False)["input_ids"]
    assert "SmolLM" not in text  # rendered by the template set, not SmolLM2's own (its default system prompt)
    assert labelled_texts(templated, example) == answers
    # nothing else carries loss: the labelled tokens are exactly those of the answers
    assert sum(label != IGNORE_INDEX for label in example["labels"]) == sum(
        len(templated(answer, add_special_tokens=False)["input_ids"]) for answer in answers
    )


def test_a_template_that_drops_earlier_reasoning_is_labelled_as_the_whole_conversation_renders_it(tokenizer):
    templated = with_chat_template(tokenizer, REASONING_TEMPLATE)
    text = render_text(templated, REASONING_CHAT)
    # the case prefix rendering cannot handle: turn 2 is rendered with its reasoning alone, without it in the whole
    assert not text.startswith(render_text(templated, REASONING_CHAT[:3]))
    assert "It moves a loss" not in text
    example = tokenize_conversation(templated, REASONING_CHAT)
    assert example["input_ids"] == templated(text, add_special_tokens=False)["input_ids"]
    # turn 2 as rendered (its answer only), turn 4 with the reasoning block the model writes after the prompt
    assert labelled_texts(templated, example) == [
        "TYPE: indemnity<|im_end|>",
        "<think>\nMarket practice.\n</think>\n\nFLAG: STANDARD<|im_end|>",
    ]
    unlabelled = templated.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label < 0])
    assert unlabelled == (
        "<|im_start|>system\nYou are a careful lawyer.<|im_end|>\n"
        "<|im_start|>user\nClassify: The Supplier shall indemnify the Customer.<|im_end|>\n<|im_start|>assistant\n"
        "\n<|im_start|>user\nIs it standard?<|im_end|>\n<|im_start|>assistant\n\n"
    )
    # only the last turn trained: the first one's tokens carry no loss
    last_only = tokenize_conversation(templated, REASONING_CHAT, trainable_turns=[4])
    assert labelled_texts(templated, last_only) == labelled_texts(templated, example)[1:]


def test_the_data_module_renders_with_the_template_and_names_a_row_it_cannot_render(tokenizer, tmp_path):
    rows = [
        {"messages": MULTI_TURN[1:3]},
        {"messages": MULTI_TURN[:3]},  # with a system message
    ]
    files = {"train_files": str(write_jsonl(tmp_path / "rows.jsonl", rows)), "val_files": None}
    data = SFTDataModule(tokenizer, chat_template="llama3", max_length=256, **files)
    assert data.tokenizer.chat_template == read_chat_template("llama3") != tokenizer.chat_template
    data.setup()
    assert [labelled_texts(data.tokenizer, e) for e in data.train_examples] == [["TYPE: indemnity<|eot_id|>"]] * 2
    refusing = SFTDataModule(tokenizer, chat_template=SYSTEMLESS_TEMPLATE, **files)
    message = r"rows\.jsonl:2: the chat template cannot render this conversation: System role not supported$"
    with pytest.raises(DataError, match=message):
        refusing.setup()


def test_eval_renders_with_the_configured_template(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    overrides = ["model=tiny", f"data.train_files={train_file}", f"data.val_files={val_file}"]
    cfg = compose_config([*overrides, "data.chat_template=zephyr"], output_dir=tmp_path, name="eval")
    loaded = load_eval_model(cfg)  # the base model: the tokenizer loaded from model.name_or_path
    assert loaded.tokenizer.chat_template == read_chat_template("zephyr")
    datamodule = build_datamodule(cfg, loaded.tokenizer)
    first = datamodule.val_examples[0]
    assert loaded.tokenizer.decode(first["input_ids"]).startswith("<|user|>\nWhat is ")
    assert labelled_texts(loaded.tokenizer, first)[0].startswith("SUM: ")


def test_eval_of_a_saved_run_renders_with_the_template_it_trained_with(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    data = ["model=tiny", f"data.train_files={train_file}", f"data.val_files={val_file}"]
    trained = compose_config(
        [*data, "data.chat_template=zephyr", "logger=none", "callbacks=default", "callbacks.progress_bar=null"]
        + ["+trainer.enable_progress_bar=false", "trainer.max_steps=2"],
        output_dir=tmp_path / "run",
    )
    train(trained)
    cfg = compose_config(data, output_dir=tmp_path / "eval", name="eval")  # no data.chat_template given
    for saved in ("model", "checkpoints/last.ckpt"):  # the exported folder's template; the checkpoint run's config
        loaded = load_eval_model(cfg, str(tmp_path / "run" / saved))
        assert loaded.tokenizer.chat_template == read_chat_template("zephyr"), saved


@pytest.mark.parametrize(("experiment", "folders"), [("sft_legal", ["model"]), ("lora_legal", ["model", "adapter"])])
def test_a_run_exports_the_template_it_trained_with(tmp_path, experiment, folders):
    run_entry_point(
        [
            f"experiment={experiment}",
            "debug=tiny",
            "data.chat_template=chatml",
            "callbacks=none",
            "+trainer.enable_progress_bar=false",
            f"paths.log_dir={tmp_path}",
        ]
    )
    run = tmp_path / "debug_tiny"
    assert json.loads((run / "summary.json").read_text())["optimizer_steps"] == 3
    for folder in folders:
        exported = AutoTokenizer.from_pretrained(run / folder)
        assert exported.chat_template == read_chat_template("chatml")
        # it renders as chatml, not as SmolLM2's own template (which inserts its default system prompt)
        question = [{"role": "user", "content": "Hi"}]
        assert exported.apply_chat_template(question, tokenize=False) == "<|im_start|>user\nHi<|im_end|>\n"

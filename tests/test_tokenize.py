"""Label masks of tokenised conversations, prompt/completion and text rows, and truncation."""

from __future__ import annotations

from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.tokenize import tokenize_conversation, tokenize_text
from lit_ft.data.truncation import truncate

MULTI_TURN = [
    {"role": "system", "content": "You are a careful lawyer."},
    {"role": "user", "content": "Classify: The Supplier shall indemnify the Customer."},
    {"role": "assistant", "content": "TYPE: indemnity"},
    {"role": "user", "content": "Is it standard?"},
    {"role": "assistant", "content": "FLAG: STANDARD"},
]


def labelled_segments(example: dict) -> list[list[int]]:
    """Runs of consecutive labelled tokens."""
    segments, current = [], []
    for token, label in zip(example["input_ids"], example["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            segments.append(current)
            current = []
    return segments + ([current] if current else [])


def test_input_ids_equal_chat_template(tokenizer):
    example = tokenize_conversation(tokenizer, MULTI_TURN)
    assert example["input_ids"] == tokenizer.apply_chat_template(MULTI_TURN, tokenize=True, return_dict=False)


def test_labels_cover_exactly_each_assistant_turn_and_its_end_token(tokenizer):
    example = tokenize_conversation(tokenizer, MULTI_TURN)
    segments = [tokenizer.decode(s) for s in labelled_segments(example)]
    assert segments == ["TYPE: indemnity<|im_end|>", "FLAG: STANDARD<|im_end|>"]
    # system prompt, user turns and the "<|im_start|>assistant\n" headers carry no loss
    text_without_loss = tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX]
    )
    assert "You are a careful lawyer." in text_without_loss and "Is it standard?" in text_without_loss
    assert text_without_loss.count("<|im_start|>assistant\n") == 2


def test_default_system_prompt_is_not_trained_on(tokenizer):
    messages = MULTI_TURN[1:3]
    example = tokenize_conversation(tokenizer, messages)
    assert "SmolLM" in tokenizer.decode(example["input_ids"])  # the template inserted its default system prompt
    assert [tokenizer.decode(s) for s in labelled_segments(example)] == ["TYPE: indemnity<|im_end|>"]


def test_trainable_turns_select_assistant_turns(tokenizer):
    example = tokenize_conversation(tokenizer, MULTI_TURN, trainable_turns=[4])
    assert [tokenizer.decode(s) for s in labelled_segments(example)] == ["FLAG: STANDARD<|im_end|>"]


def test_truncation_cuts_and_counts(tokenizer):
    full = tokenize_conversation(tokenizer, MULTI_TURN)
    right = truncate([full], 20, "right")
    assert right.sequences[0]["input_ids"] == full["input_ids"][:20]
    assert right.cut_tokens == len(full["input_ids"]) - 20 and right.tokens == 20
    assert right.dropped == "no_loss_tokens"  # the first 20 tokens are system prompt and user turn: no answer left
    left = truncate([full], 20, "left")
    assert left.sequences[0] == {"input_ids": full["input_ids"][-20:], "labels": full["labels"][-20:]}
    assert left.kept and left.loss_tokens == sum(label != IGNORE_INDEX for label in full["labels"][-20:]) > 0
    untouched = truncate([full], 10_000, "right")
    assert untouched.cut_tokens == 0 and untouched.sequences[0] == full


def test_prompt_completion_text_masks_prompt_and_appends_eos(tokenizer):
    example = tokenize_text(tokenizer, "Translate to French: cat ->", " chat")
    prompt_len = len(tokenizer("Translate to French: cat ->", add_special_tokens=False)["input_ids"])
    assert example["labels"][:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert example["labels"][prompt_len:] == example["input_ids"][prompt_len:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id


def test_raw_text_has_loss_on_every_token(tokenizer):
    example = tokenize_text(tokenizer, "", "The water cycle moves water between sea, air and land.")
    assert example["labels"] == example["input_ids"]

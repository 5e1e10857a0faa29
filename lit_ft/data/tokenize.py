"""Turn examples into ``input_ids`` and ``labels`` (-100 where a token carries no loss), not shifted.

Chat examples are tokenised exactly as the tokenizer's chat template renders them; the assistant spans are
found by rendering each conversation prefix, so no template-specific markers are hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedTokenizerBase

from lit_ft.data.rows import ChatExample, Message, SFTExample, TextExample

IGNORE_INDEX = -100
Truncation = Literal["right", "left"]


def render_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], add_generation_prompt: bool = False
) -> list[int]:
    """Token ids of the chat template applied to ``messages`` (the template's own special tokens included)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _trim_trailing_whitespace(tokenizer: PreTrainedTokenizerBase, ids: list[int], start: int, end: int) -> int:
    """Move ``end`` back over tokens that decode to whitespace (the newline after an end-of-turn token)."""
    while end > start and not tokenizer.decode(ids[end - 1 : end]).strip():
        end -= 1
    return end


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turns: Sequence[int], ids: list[int]
) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of the given assistant turns: their content and end-of-turn token."""
    spans = []
    for turn in turns:
        start = len(render_ids(tokenizer, messages[:turn], add_generation_prompt=True))
        through = render_ids(tokenizer, messages[: turn + 1])
        if ids[: len(through)] != through:
            raise ValueError(
                "The chat template does not tokenise a conversation prefix as a prefix of the whole conversation "
                f"(turn {turn}); assistant labels cannot be located."
            )
        spans.append((start, _trim_trailing_whitespace(tokenizer, ids, start, len(through))))
    return spans


def truncate(example: dict[str, list[int]], max_length: int | None, side: Truncation = "right") -> int:
    """Cut every list of ``example`` to ``max_length`` in place (``right`` keeps the start); return tokens cut."""
    length = len(example["input_ids"])
    if max_length is None or length <= max_length:
        return 0
    for key, values in example.items():
        example[key] = values[:max_length] if side == "right" else values[length - max_length :]
    return length - max_length


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    max_length: int | None = None,
    trainable_turns: Sequence[int] | None = None,
    truncation: Truncation = "right",
) -> dict[str, list[int]]:
    """Tokenise a chat with labels on assistant turns only.

    Returns ``input_ids`` (the chat template's own tokenisation of ``messages``), ``labels`` (equal to
    ``input_ids`` on each trainable assistant turn's content and end-of-turn token, -100 on system, user and
    assistant headers) and ``num_truncated`` (tokens cut to fit ``max_length``).

    Args:
        trainable_turns: indices of the assistant messages that carry loss (default: all of them).
        truncation: ``right`` drops the end of the conversation, ``left`` its beginning.
    """
    if trainable_turns is None:
        trainable_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    input_ids = render_ids(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in assistant_spans(tokenizer, messages, trainable_turns, input_ids):
        labels[start:end] = input_ids[start:end]
    example = {"input_ids": input_ids, "labels": labels}
    example["num_truncated"] = truncate(example, max_length, truncation)
    return example


def tokenize_text(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
    max_length: int | None = None,
    truncation: Truncation = "right",
) -> dict[str, list[int]]:
    """Tokenise raw text (no chat template): ``prompt`` without loss, then ``completion`` + EOS with loss.

    With an empty prompt this is continual pre-training: loss on every token.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    example = {
        "input_ids": prompt_ids + completion_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids,
    }
    example["num_truncated"] = truncate(example, max_length, truncation)
    return example


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase, example: SFTExample, max_length: int | None, truncation: Truncation = "right"
) -> dict[str, list[int]]:
    """Dispatch on the example's kind; see :func:`tokenize_conversation` and :func:`tokenize_text`."""
    if isinstance(example, ChatExample):
        return tokenize_conversation(tokenizer, example.messages, max_length, example.trainable_turns, truncation)
    if isinstance(example, TextExample):
        return tokenize_text(tokenizer, example.prompt, example.completion, max_length, truncation)
    raise TypeError(f"cannot tokenise {type(example).__name__}")

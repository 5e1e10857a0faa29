"""Turn examples into :class:`~lit_ft.data.batch.Tokens`: ``input_ids`` and ``labels`` (-100 where a token carries
no loss), not shifted, whole (:func:`lit_ft.data.truncation.truncate` fits them to a length).

Chat examples are tokenised exactly as the tokenizer's chat template renders them; the assistant spans are
found by rendering each conversation prefix, so no template-specific markers are hard-coded.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import IGNORE_INDEX, Tokens, UnpairedExample
from lit_ft.data.preference_rows import UnpairedPreference
from lit_ft.data.rows import ChatExample, Message, SFTExample, TextExample, Tool


def render_ids(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    add_generation_prompt: bool = False,
    tools: Sequence[Tool] | None = None,
) -> list[int]:
    """Token ids of the chat template applied to ``messages`` and ``tools`` (the template's own special tokens
    included)."""
    text = tokenizer.apply_chat_template(
        list(messages), tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _trim_trailing_whitespace(tokenizer: PreTrainedTokenizerBase, ids: list[int], start: int, end: int) -> int:
    """Move ``end`` back over tokens that decode to whitespace (the newline after an end-of-turn token)."""
    while end > start and not tokenizer.decode(ids[end - 1 : end]).strip():
        end -= 1
    return end


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    turns: Sequence[int],
    ids: list[int],
    tools: Sequence[Tool] | None = None,
) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of the given assistant turns: their content (or tool call) and end-of-turn
    token."""
    spans = []
    for turn in turns:
        start = len(render_ids(tokenizer, messages[:turn], add_generation_prompt=True, tools=tools))
        through = render_ids(tokenizer, messages[: turn + 1], tools=tools)
        if ids[: len(through)] != through:
            raise ValueError(
                "The chat template does not tokenise a conversation prefix as a prefix of the whole conversation "
                f"(turn {turn}); assistant labels cannot be located."
            )
        spans.append((start, _trim_trailing_whitespace(tokenizer, ids, start, len(through))))
    return spans


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    trainable_turns: Sequence[int] | None = None,
    tools: Sequence[Tool] | None = None,
) -> Tokens:
    """Tokenise a chat with labels on assistant turns only (an assistant's tool call included, tool outputs not).

    Returns ``input_ids`` (the chat template's own tokenisation of ``messages``) and ``labels`` (equal to
    ``input_ids`` on each trainable assistant turn's content and end-of-turn token, -100 on system, user and
    assistant headers).

    Args:
        trainable_turns: indices of the assistant messages that carry loss (default: all of them).
        tools: function schemas offered, passed to the chat template as ``tools=``.
    """
    if trainable_turns is None:
        trainable_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    input_ids = render_ids(tokenizer, messages, tools=tools)
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in assistant_spans(tokenizer, messages, trainable_turns, input_ids, tools):
        labels[start:end] = input_ids[start:end]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_text(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    completion: str,
) -> Tokens:
    """Tokenise raw text (no chat template): ``prompt`` without loss, then ``completion`` + EOS with loss.

    With an empty prompt this is continual pre-training: loss on every token.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + completion_ids}


def tokenize_example(tokenizer: PreTrainedTokenizerBase, example: SFTExample) -> Tokens:
    """Dispatch on the example's kind; see :func:`tokenize_conversation` and :func:`tokenize_text`."""
    if isinstance(example, ChatExample):
        return tokenize_conversation(tokenizer, example.messages, example.trainable_turns, example.tools)
    if isinstance(example, TextExample):
        return tokenize_text(tokenizer, example.prompt, example.completion)
    raise TypeError(f"cannot tokenise {type(example).__name__}")


def tokenize_unpaired(tokenizer: PreTrainedTokenizerBase, unpaired: UnpairedPreference) -> UnpairedExample:
    """An unpaired preference row's tokens (loss on its answer only, as :func:`tokenize_example`), task type and
    label."""
    return {**tokenize_example(tokenizer, unpaired.example), "task_type": unpaired.task_type, "label": unpaired.label}

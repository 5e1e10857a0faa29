"""Validate raw rows into typed examples: chat, prompt/completion or raw text, each with a task type.

Every error names the place of the row (file and line) and the field at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_ft.data.readers import DataError, Record

DEFAULT_TASK_TYPE = "default"
ROLES = ("system", "user", "assistant")
Message = dict[str, str]


@dataclass(frozen=True)
class ChatExample:
    """A conversation; ``trainable_turns`` are indices of the assistant messages that carry loss."""

    messages: list[Message]
    trainable_turns: tuple[int, ...]
    task_type: str


@dataclass(frozen=True)
class TextExample:
    """Plain text: a ``prompt`` without loss (may be empty) followed by ``completion`` with loss."""

    prompt: str
    completion: str
    task_type: str


SFTExample = ChatExample | TextExample


def check_text(text: str, where: str, field: str, forbidden: Sequence[str] = ()) -> str:
    """Refuse text holding one of ``forbidden`` (the tokenizer's control tokens, such as ``<|im_end|>``): the
    tokenizer would read it as that token, not as text, ending a turn early or breaking the label mask."""
    for token in forbidden:
        if token in text:
            raise DataError(
                where, f"contains the control token {token!r}, which the tokenizer would not read as text", field
            )
    return text


def parse_messages(
    value: Any, where: str, field: str, allow_empty: bool = False, forbidden: Sequence[str] = ()
) -> list[Message]:
    """Check a list of ``{"role", "content"}`` messages: known roles, string content without control tokens,
    non-empty assistant turns."""
    if not isinstance(value, list) or (not value and not allow_empty):
        raise DataError(where, "expected a non-empty list of messages", field)
    messages = []
    for index, message in enumerate(value):
        place = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise DataError(where, f"expected an object with 'role' and 'content', got {type(message).__name__}", place)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(where, f"unknown role {role!r} (expected one of {', '.join(ROLES)})", f"{place}.role")
        if not isinstance(content, str):
            raise DataError(where, f"content must be a string, got {type(content).__name__}", f"{place}.content")
        if role == "assistant" and not content.strip():
            raise DataError(where, "empty assistant turn", f"{place}.content")
        check_text(content, where, f"{place}.content", forbidden)
        messages.append({"role": role, "content": content})
    return messages


def check_turn_order(messages: list[Message], where: str, field: str) -> None:
    """An optional leading system message, then user and assistant messages alternating, user first."""
    expected = "user"
    for index, message in enumerate(messages):
        if message["role"] == "system":
            if index != 0:
                raise DataError(where, "a system message may only come first", f"{field}[{index}].role")
            continue
        if message["role"] != expected:
            raise DataError(where, f"expected a {expected} turn, got {message['role']}", f"{field}[{index}].role")
        expected = "assistant" if expected == "user" else "user"


def parse_task_type(row: dict[str, Any], where: str) -> str:
    task_type = row.get("task_type", DEFAULT_TASK_TYPE)
    if not isinstance(task_type, str) or not task_type:
        raise DataError(where, "must be a non-empty string", "task_type")
    return task_type


def _string(row: dict[str, Any], key: str, where: str, forbidden: Sequence[str]) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(where, f"expected a string or a list of messages, got {type(value).__name__}", key)
    return check_text(value, where, key, forbidden)


def parse_sft_row(record: Record, forbidden: Sequence[str] = ()) -> SFTExample:
    """Turn a raw row into an example. Formats: ``messages``; ``prompt`` + ``completion``; ``text``.

    ``forbidden``: strings no text may contain (the tokenizer's control tokens).
    """
    row, where = record.row, record.where
    task_type = parse_task_type(row, where)
    if "messages" in row:
        messages = parse_messages(row["messages"], where, "messages", forbidden=forbidden)
        check_turn_order(messages, where, "messages")
        turns = tuple(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if not turns:
            raise DataError(where, "the conversation has no assistant turn to learn from", "messages")
        return ChatExample(messages, turns, task_type)
    if "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if key not in row:
                raise DataError(where, "missing (prompt/completion rows need both)", key)
        if isinstance(row["prompt"], list) or isinstance(row["completion"], list):
            prompt = parse_messages(row["prompt"], where, "prompt", forbidden=forbidden)
            completion = parse_messages(row["completion"], where, "completion", forbidden=forbidden)
            messages = prompt + completion
            check_turn_order(messages, where, "prompt+completion")
            turns = tuple(i for i in range(len(prompt), len(messages)) if messages[i]["role"] == "assistant")
            if not turns:
                raise DataError(where, "the completion has no assistant message", "completion")
            return ChatExample(messages, turns, task_type)
        prompt, completion = _string(row, "prompt", where, forbidden), _string(row, "completion", where, forbidden)
        if not completion.strip():
            raise DataError(where, "empty completion", "completion")
        return TextExample(prompt, completion, task_type)
    if "text" in row:
        text = _string(row, "text", where, forbidden)
        if not text.strip():
            raise DataError(where, "empty text", "text")
        return TextExample("", text, task_type)
    raise DataError(
        where, f"unknown row format with fields {sorted(row)}; expected 'messages', 'prompt'+'completion' or 'text'"
    )

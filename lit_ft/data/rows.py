"""Typed examples (a chat, or prompt/completion text, each with a task type) and the checks their parts pass:
messages (tool calls and tool messages included), turn order, a ``tools`` column, text free of control tokens.
Which row format holds them is :mod:`lit_ft.data.formats`'.

Every error names the place of the row (file and line) and the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_ft.data.readers import DataError

DEFAULT_TASK_TYPE = "default"
ROLES = ("system", "user", "assistant", "tool")
# A chat message as the chat template takes it: ``role`` and ``content`` (a string), an assistant's ``tool_calls``
# (``[{"type": "function", "function": {"name", "arguments": dict}}]``), a tool message's optional ``name`` and
# ``tool_call_id``.
Message = dict[str, Any]
# A function's JSON schema: ``{"type": "function", "function": {"name", "description"?, "parameters"?}}``.
Tool = dict[str, Any]


@dataclass(frozen=True)
class ChatExample:
    """A conversation; ``trainable_turns`` are indices of the assistant messages that carry loss (an assistant's
    tool call included, tool outputs never); ``tools`` the functions offered, passed to the chat template."""

    messages: list[Message]
    trainable_turns: tuple[int, ...]
    task_type: str
    tools: list[Tool] | None = None


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


def _from_json(value: Any, where: str, field: str, what: str) -> Any:
    """``value``, read from JSON when it is a string (datasets often store nested data as JSON text)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise DataError(where, f"{what} is not valid JSON ({error.msg})", field) from error


def _json_object(value: Any, where: str, field: str, what: str) -> dict[str, Any]:
    """``value`` as a dict: a dict, or a string holding a JSON object."""
    value = _from_json(value, where, field, what)
    if not isinstance(value, dict):
        raise DataError(where, f"{what} must be an object, got {type(value).__name__}", field)
    return value


def parse_tool_calls(value: Any, where: str, field: str, forbidden: Sequence[str] = ()) -> list[dict[str, Any]]:
    """An assistant's ``tool_calls``: a non-empty list of ``{"type": "function", "function": {"name",
    "arguments"}}`` (``arguments`` an object, or a JSON string of one, read into a dict: templates such as
    Qwen2.5's write it with ``tojson``, so a string would be quoted twice)."""
    if not isinstance(value, list) or not value:
        raise DataError(where, "expected a non-empty list of tool calls", field)
    calls = []
    for index, call in enumerate(value):
        place = f"{field}[{index}]"
        call = _json_object(call, where, place, "a tool call")
        function = _json_object(call.get("function", call), where, f"{place}.function", "a tool call's function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise DataError(where, "a tool call needs the function's name", f"{place}.function.name")
        arguments = _json_object(function.get("arguments", {}), where, f"{place}.function.arguments", "arguments")
        check_text(json.dumps(arguments), where, f"{place}.function.arguments", forbidden)
        calls.append(
            {
                "type": "function",
                "function": {
                    "name": check_text(name, where, f"{place}.function.name", forbidden),
                    "arguments": arguments,
                },
            }
        )
    return calls


def parse_tools(value: Any, where: str, field: str = "tools") -> list[Tool]:
    """A ``tools`` column: a list (or a JSON string of one) of function schemas, each ``{"type": "function",
    "function": {"name": str, "description"?: str, "parameters"?: {"type": "object", ...}}}``."""
    value = _from_json(value, where, field, "the tools list")
    if not isinstance(value, list) or not value:
        raise DataError(where, "expected a non-empty list of function schemas", field)
    tools = []
    for index, tool in enumerate(value):
        place = f"{field}[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise DataError(where, 'expected {"type": "function", "function": {...}}', place)
        function = tool["function"]
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise DataError(where, "a function schema needs a name", f"{place}.function.name")
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise DataError(where, "parameters must be a JSON schema of type 'object'", f"{place}.function.parameters")
        tools.append(tool)
    return tools


def parse_messages(
    value: Any,
    where: str,
    field: str,
    allow_empty: bool = False,
    forbidden: Sequence[str] = (),
    keys: tuple[str, str] = ("role", "content"),
) -> list[Message]:
    """Check a list of ``{"role", "content"}`` messages: known roles, string content without control tokens,
    non-empty assistant turns (an assistant's ``tool_calls`` may stand for its content). ``keys``: what errors
    call the role and content fields (a format's own names, such as ShareGPT's ``from`` and ``value``)."""
    if not isinstance(value, list) or (not value and not allow_empty):
        raise DataError(where, "expected a non-empty list of messages", field)
    messages = []
    for index, message in enumerate(value):
        place = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise DataError(where, f"expected an object with 'role' and 'content', got {type(message).__name__}", place)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(where, f"unknown role {role!r} (expected one of {', '.join(ROLES)})", f"{place}.{keys[0]}")
        parsed: Message = {"role": role}
        if role == "assistant" and message.get("tool_calls") is not None:
            parsed["tool_calls"] = parse_tool_calls(message["tool_calls"], where, f"{place}.tool_calls", forbidden)
            content = "" if content is None else content  # a call alone; templates need a string
        if not isinstance(content, str):
            raise DataError(where, f"content must be a string, got {type(content).__name__}", f"{place}.{keys[1]}")
        if role == "assistant" and not content.strip() and "tool_calls" not in parsed:
            raise DataError(where, "empty assistant turn", f"{place}.{keys[1]}")
        parsed["content"] = check_text(content, where, f"{place}.{keys[1]}", forbidden)
        if role == "tool":
            parsed |= {key: message[key] for key in ("name", "tool_call_id") if isinstance(message.get(key), str)}
        messages.append(parsed)
    return messages


def check_turn_order(messages: list[Message], where: str, field: str, role_key: str = "role") -> None:
    """An optional leading system message, then user and assistant messages alternating, user first; an assistant
    message with ``tool_calls`` is answered by one or more ``tool`` messages, then the assistant again."""
    expected: tuple[str, ...] = ("user",)
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            if index != 0:
                raise DataError(where, "a system message may only come first", f"{field}[{index}].{role_key}")
            continue
        if role not in expected:
            if role == "tool":
                raise DataError(
                    where, "a tool message must follow an assistant's tool call", f"{field}[{index}].{role_key}"
                )
            raise DataError(
                where, f"expected a {' or '.join(expected)} turn, got {role}", f"{field}[{index}].{role_key}"
            )
        if role == "user":
            expected = ("assistant",)
        elif role == "assistant":
            expected = ("tool",) if "tool_calls" in message else ("user",)
        else:
            expected = ("tool", "assistant")


def assistant_turns(messages: list[Message], start: int = 0) -> tuple[int, ...]:
    """Indices from ``start`` of the assistant messages (tool calls included): the turns that carry loss."""
    return tuple(i for i in range(start, len(messages)) if messages[i]["role"] == "assistant")


def parse_task_type(row: dict[str, Any], where: str) -> str:
    task_type = row.get("task_type", DEFAULT_TASK_TYPE)
    if not isinstance(task_type, str) or not task_type:
        raise DataError(where, "must be a non-empty string", "task_type")
    return task_type

"""Row formats, recognised per row by its fields and named in errors and logs.

SFT formats (each with an optional ``task_type``), tried in this order:

- ``messages`` (OpenAI style): ``{"role", "content"}`` messages; an assistant may call tools (``tool_calls``), a
  ``tool`` message answers a call, and a ``tools`` column (function schemas) is passed to the chat template as
  ``tools=``;
- ``sharegpt``: ``conversations`` of ``{"from", "value"}``, ``from`` one of human/gpt/system/tool/function_call
  (user/assistant/system/tool/an assistant's tool call, its ``value`` the JSON call ``{"name", "arguments"}``;
  LLaMA-Factory's ``observation`` is a tool output too); optional ``system`` and ``tools`` columns;
- in both, a tool call must name a function the row's ``tools`` offer, when it has some;
- ``alpaca``: ``instruction``, optional ``input`` (appended to the instruction after an empty line), ``output``,
  optional ``system``: a one-turn chat;
- ``prompt/completion``: strings (raw text) or message lists (chat);
- ``text``: raw text, loss on every token.

Preference formats (:mod:`lit_ft.data.preference_rows`): ``preference`` (``chosen``/``rejected``, with or without a
``prompt``) and ``unpaired preference`` (``prompt``/``completion``/``label``, the KTO format). A row that matches
no format is a :class:`~lit_ft.data.readers.DataError` naming the formats tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lit_ft.data.readers import DataError, Record
from lit_ft.data.rows import (
    ChatExample,
    Message,
    SFTExample,
    TextExample,
    Tool,
    assistant_turns,
    check_text,
    check_turn_order,
    parse_messages,
    parse_task_type,
    parse_tool_calls,
    parse_tools,
)

MESSAGES, SHAREGPT, ALPACA, PROMPT_COMPLETION, TEXT = "messages", "sharegpt", "alpaca", "prompt/completion", "text"
PREFERENCE, UNPAIRED = "preference", "unpaired preference"
# ShareGPT's ``from`` -> a message role (``function_call``: an assistant's tool call).
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "tool": "tool",
    "function_call": "assistant",
    "observation": "tool",
}


def _tools(row: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    return None if row.get("tools") in (None, "", []) else parse_tools(row["tools"], where)


def check_calls_offered(messages: list[Message], tools: list[Tool], where: str, field: str) -> None:
    """Every tool call names a function of ``tools`` (a call of another would train the model to call what the
    prompt never offered)."""
    offered = {tool["function"]["name"] for tool in tools}
    for index, message in enumerate(messages):
        for number, call in enumerate(message.get("tool_calls", [])):
            if call["function"]["name"] not in offered:
                raise DataError(
                    where,
                    f"calls {call['function']['name']!r}, which 'tools' does not offer ({', '.join(sorted(offered))})",
                    f"{field}[{index}].tool_calls[{number}].function.name",
                )


def chat_example(
    messages: list[Message],
    task_type: str,
    where: str,
    field: str,
    answer: tuple[str, int] | None = None,
    tools: list[Tool] | None = None,
) -> ChatExample:
    """A checked conversation (turn order reported under ``field``) whose assistant turns carry loss: all of them,
    or with ``answer=(name, start)`` those from message ``start`` on (the answer's, reported under ``name``)."""
    check_turn_order(messages, where, field)
    if tools is not None:
        check_calls_offered(messages, tools, where, field)
    name, start = answer or ("conversation", 0)
    turns = assistant_turns(messages, start)
    if not turns:
        raise DataError(
            where, f"no assistant turn to learn from: the {name} has no assistant message", answer and name or field
        )
    return ChatExample(messages, turns, task_type, tools)


def _from_messages(row: dict[str, Any], where: str, task_type: str, forbidden: Sequence[str]) -> SFTExample:
    messages = parse_messages(row["messages"], where, "messages", forbidden=forbidden)
    return chat_example(messages, task_type, where, "messages", tools=_tools(row, where))


def sharegpt_messages(value: Any, where: str, field: str = "conversations") -> list[dict[str, Any]]:
    """ShareGPT turns as OpenAI-style messages (one each, same index; checked by ``parse_messages`` after)."""
    if not isinstance(value, list) or not value:
        raise DataError(where, "expected a non-empty list of turns", field)
    messages = []
    for index, turn in enumerate(value):
        place = f"{field}[{index}]"
        if not isinstance(turn, dict):
            raise DataError(where, f"expected an object with 'from' and 'value', got {type(turn).__name__}", place)
        source, text = turn.get("from"), turn.get("value")
        if source not in SHAREGPT_ROLES:
            raise DataError(
                where, f"unknown role {source!r} (expected one of {', '.join(SHAREGPT_ROLES)})", f"{place}.from"
            )
        if source == "function_call":
            [call] = parse_tool_calls([text], where, f"{place}.value")
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": SHAREGPT_ROLES[source], "content": text})
    return messages


def _from_sharegpt(row: dict[str, Any], where: str, task_type: str, forbidden: Sequence[str]) -> SFTExample:
    system = _string(row, "system", where, forbidden) if row.get("system") else ""
    turns = sharegpt_messages(row["conversations"], where)
    messages = parse_messages(turns, where, "conversations", forbidden=forbidden, keys=("from", "value"))
    check_turn_order(messages, where, "conversations", role_key="from")
    prefix = [{"role": "system", "content": system}] if system else []
    return chat_example(prefix + messages, task_type, where, "conversations", tools=_tools(row, where))


def _string(row: dict[str, Any], key: str, where: str, forbidden: Sequence[str], kinds: str = "a string") -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(where, f"expected {kinds}, got {type(value).__name__}", key)
    return check_text(value, where, key, forbidden)


def _nonempty(text: str, where: str, field: str, what: str = "empty completion") -> str:
    if not text.strip():
        raise DataError(where, what, field)
    return text


def _from_alpaca(row: dict[str, Any], where: str, task_type: str, forbidden: Sequence[str]) -> SFTExample:
    instruction = _nonempty(_string(row, "instruction", where, forbidden), where, "instruction", "empty instruction")
    extra = _string(row, "input", where, forbidden) if row.get("input") is not None else ""
    output = _nonempty(_string(row, "output", where, forbidden), where, "output")
    system = _string(row, "system", where, forbidden) if row.get("system") else ""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction},
        {"role": "assistant", "content": output},
    ]
    return chat_example(messages, task_type, where, "instruction")


def prompt_completion(row: dict[str, Any], where: str, task_type: str, forbidden: Sequence[str]) -> SFTExample:
    """A ``prompt``/``completion`` row: two strings (raw text, loss on the completion) or two message lists (chat,
    loss on the completion's assistant turns)."""
    for key in ("prompt", "completion"):
        if key not in row:
            raise DataError(where, "missing (prompt/completion rows need both)", key)
    if isinstance(row["prompt"], list) or isinstance(row["completion"], list):
        prompt = parse_messages(row["prompt"], where, "prompt", forbidden=forbidden)
        completion = parse_messages(row["completion"], where, "completion", forbidden=forbidden)
        return chat_example(prompt + completion, task_type, where, "prompt+completion", ("completion", len(prompt)))
    kinds = "a string or a list of messages"
    prompt = _string(row, "prompt", where, forbidden, kinds)
    completion = _nonempty(_string(row, "completion", where, forbidden, kinds), where, "completion")
    return TextExample(prompt, completion, task_type)


def _from_text(row: dict[str, Any], where: str, task_type: str, forbidden: Sequence[str]) -> SFTExample:
    text = _nonempty(
        _string(row, "text", where, forbidden, "a string or a list of messages"), where, "text", "empty text"
    )
    return TextExample("", text, task_type)


Reader = Callable[[dict[str, Any], str, str, Sequence[str]], SFTExample]
# name -> (markers: field sets one of which the row must hold in full, what the error says it expects), in the
# order tried. ``label`` alone does not make a row unpaired (a chat dataset may have a label column of its own).
FORMATS: dict[str, tuple[tuple[tuple[str, ...], ...], str]] = {
    UNPAIRED: ((("label", "completion"),), "'prompt', 'completion' and a boolean 'label'"),
    PREFERENCE: ((("chosen",), ("rejected",)), "'chosen' and 'rejected'"),
    MESSAGES: ((("messages",),), "'messages'"),
    SHAREGPT: ((("conversations",),), "'conversations'"),
    ALPACA: ((("instruction",), ("output",)), "'instruction' and 'output'"),
    PROMPT_COMPLETION: ((("prompt",), ("completion",)), "'prompt' and 'completion'"),
    TEXT: ((("text",),), "'text'"),
}
SFT_READERS: dict[str, Reader] = {
    MESSAGES: _from_messages,
    SHAREGPT: _from_sharegpt,
    ALPACA: _from_alpaca,
    PROMPT_COMPLETION: prompt_completion,
    TEXT: _from_text,
}


def detect_format(record: Record) -> str:
    """The name of the row's format: the first of :data:`FORMATS` the row holds one marker of."""
    for name, (markers, _) in FORMATS.items():
        if any(all(field in record.row for field in marker) for marker in markers):
            return name
    tried = "; ".join(f"{name} ({expects})" for name, (_, expects) in FORMATS.items())
    raise DataError(record.where, f"unknown row format with fields {sorted(record.row)}; tried {tried}")


def parse_sft_row(record: Record, forbidden: Sequence[str] = ()) -> SFTExample:
    """Turn a raw row of an SFT format (see the module docstring) into an example.

    ``forbidden``: strings no text may contain (the tokenizer's control tokens).
    """
    row, where = record.row, record.where
    name = detect_format(record)
    if name not in SFT_READERS:
        raise DataError(where, f"a row of format '{name}' is for a preference loss, not SFT")
    return SFT_READERS[name](row, where, parse_task_type(row, where), forbidden)

"""Validate preference rows: a prompt with a chosen and a rejected answer, a task type and an optional margin.

Formats (``task_type`` and ``margin`` optional on each):
- chat: ``prompt`` a message list, ``chosen``/``rejected`` message lists (or strings, taken as one assistant turn);
- text: ``prompt``, ``chosen``, ``rejected`` strings (no chat template; completion followed by EOS);
- implicit prompt: ``chosen``/``rejected`` whole conversations; their longest common message prefix is the prompt
  (as TRL's ``extract_prompt`` splits them).

Unpaired rows (the KTO format): ``prompt``, ``completion`` (strings, or a message list and a message list or string)
and ``label`` (``true``: a desirable completion, ``false``: an undesirable one), read into an
:class:`UnpairedPreference`.

Every error names the place of the row (file and line) and the field at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_ft.data.formats import PREFERENCE, UNPAIRED, chat_example, detect_format, parse_sft_row, prompt_completion
from lit_ft.data.readers import DataError, Record
from lit_ft.data.rows import (
    ChatExample,
    Message,
    SFTExample,
    TextExample,
    check_text,
    parse_messages,
    parse_task_type,
)

SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """The same prompt answered twice; ``chosen`` and ``rejected`` each carry loss on their answer only."""

    chosen: SFTExample
    rejected: SFTExample
    task_type: str
    margin: float | None = None


def _margin(row: dict[str, Any], where: str) -> float | None:
    margin = row.get("margin")
    if margin is None:
        return None
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise DataError(where, f"must be a number, got {type(margin).__name__}", "margin")
    return float(margin)


def _answer(value: Any, where: str, field: str, forbidden: Sequence[str]) -> list[Message]:
    """A chat answer: a message list, or a string taken as one assistant message."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(where, "empty answer", field)
        return [{"role": "assistant", "content": check_text(value, where, field, forbidden)}]
    return parse_messages(value, where, field, forbidden=forbidden)


def _chat_example(prompt: list[Message], answer: list[Message], task_type: str, where: str, side: str) -> ChatExample:
    return chat_example(prompt + answer, task_type, where, f"prompt+{side}", (side, len(prompt)))


def _split_common_prefix(chosen: list[Message], rejected: list[Message], where: str) -> int:
    """Number of leading messages the two conversations share (the implicit prompt)."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) or shared == len(rejected):
        raise DataError(where, "chosen and rejected do not differ after their shared prompt", "rejected")
    if shared == 0:
        raise DataError(where, "chosen and rejected share no prompt messages (give 'prompt' explicitly)", "chosen")
    return shared


def parse_preference_row(record: Record, forbidden: Sequence[str] = ()) -> PreferencePair:
    """Turn a raw row into a :class:`PreferencePair` (see the module docstring for the accepted formats).
    ``forbidden``: strings no text may contain (the tokenizer's control tokens), as for SFT rows."""
    row, where = record.row, record.where
    task_type, margin = parse_task_type(row, where), _margin(row, where)
    for side in SIDES:
        if side not in row:
            raise DataError(where, "missing (preference rows need 'chosen' and 'rejected')", side)
    if row["chosen"] == row["rejected"]:
        raise DataError(where, "identical to 'chosen'", "rejected")
    if "prompt" not in row:
        if any(isinstance(row[side], str) for side in SIDES):
            raise DataError(
                where, "missing (text answers need a prompt; an implicit prompt needs message lists)", "prompt"
            )
        chosen, rejected = (parse_messages(row[side], where, side, forbidden=forbidden) for side in SIDES)
        shared = _split_common_prefix(chosen, rejected, where)
        prompt, answers = chosen[:shared], {"chosen": chosen[shared:], "rejected": rejected[shared:]}
    elif isinstance(row["prompt"], str):
        examples = {}
        for side in SIDES:
            if not isinstance(row[side], str):
                raise DataError(where, f"a text prompt needs a text answer, got {type(row[side]).__name__}", side)
            if not row[side].strip():
                raise DataError(where, "empty answer", side)
            prompt = check_text(row["prompt"], where, "prompt", forbidden)
            examples[side] = TextExample(prompt, check_text(row[side], where, side, forbidden), task_type)
        return PreferencePair(examples["chosen"], examples["rejected"], task_type, margin)
    else:
        prompt = parse_messages(row["prompt"], where, "prompt", forbidden=forbidden)
        answers = {side: _answer(row[side], where, side, forbidden) for side in SIDES}
    chosen, rejected = (_chat_example(prompt, answers[side], task_type, where, side) for side in SIDES)
    return PreferencePair(chosen, rejected, task_type, margin)


def sft_view(record: Record, forbidden: Sequence[str] = ()) -> SFTExample:
    """A row as one SFT example: a preference row (``chosen`` and ``rejected``) gives its chosen side, any other
    row :func:`parse_sft_row`'s example. What the generation samples and the data report read, for both kinds
    of data."""
    name = detect_format(record)
    if name == PREFERENCE:
        return parse_preference_row(record, forbidden).chosen
    if name == UNPAIRED:
        return parse_unpaired_row(record, forbidden).example
    return parse_sft_row(record, forbidden)


@dataclass(frozen=True)
class UnpairedPreference:
    """One answer to a prompt judged on its own (KTO): ``example`` carries loss on the answer only, ``label`` says
    whether that answer is desirable."""

    example: SFTExample
    label: bool
    task_type: str


def parse_unpaired_row(record: Record, forbidden: Sequence[str] = ()) -> UnpairedPreference:
    """Turn a ``prompt``/``completion``/``label`` row into an :class:`UnpairedPreference`: text when both are
    strings, else a chat (a string completion taken as one assistant turn), the completion non-empty."""
    row, where = record.row, record.where
    task_type = parse_task_type(row, where)
    for key in ("prompt", "completion", "label"):
        if key not in row:
            raise DataError(where, "missing (unpaired preference rows need prompt, completion and label)", key)
    if not isinstance(row["label"], bool):
        raise DataError(where, f"must be true or false, got {row['label']!r}", "label")
    if isinstance(row["prompt"], list):
        prompt = parse_messages(row["prompt"], where, "prompt", forbidden=forbidden)
        example: SFTExample = _chat_example(
            prompt, _answer(row["completion"], where, "completion", forbidden), task_type, where, "completion"
        )
    else:
        example = prompt_completion(row, where, task_type, forbidden)
    return UnpairedPreference(example, row["label"], task_type)

"""Prompts for generation, built from data rows: a row cut before the answer it was trained on, with that answer
as the reference. The ``GenerationSamples`` and ``TaskScores`` callbacks and ``eval.py`` read them; generating
answers to them is :func:`lit_ft.eval.generation.generate_answers`.

A prompt is ``{"id"?, "task_type", "reference"}`` with ``"messages"`` (a conversation up to the answer: rendered
with the chat template and the assistant header) or ``"text"`` (continued as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_ft.data.preference_rows import sft_view
from lit_ft.data.readers import Record, read_records
from lit_ft.data.rows import ChatExample, parse_messages

Prompt = dict[str, Any]


def load_prompts(path: str | Path) -> list[Prompt]:
    """Rows ``{"messages": [...], "task_type"?, "reference"?}`` (the conversation up to the answer)."""
    prompts = []
    for record in read_records(path):
        messages = parse_messages(record.row.get("messages"), record.where, "messages")
        prompts.append(
            {"messages": messages, "task_type": record.row.get("task_type"), "reference": record.row.get("reference")}
        )
    return prompts


def prompt_id(where: str) -> str:
    """``folder/file:line`` of a row's ``where`` (``path/to/folder/file:line``)."""
    path = Path(where)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def prompts_from_records(records: list[Record], limit: int | None = None) -> list[Prompt]:
    """Up to ``limit`` prompts (all when ``None``) from training-format rows, taken in turn from each task type
    (file order within).

    A chat row becomes its conversation up to its last assistant turn (the reference); a prompt/completion
    text row becomes ``{"text": prompt}`` (generated without the chat template); raw text rows are skipped.
    Each prompt's ``id`` is its row's place with the file's own folder only (``legal/val.jsonl:12``): the same
    for two runs on one data folder wherever it lies, so their answers can be paired, and apart for sources of a
    mixture whose files share a name (``legal/val.jsonl``, ``general_chat/val.jsonl``).
    """
    by_task: dict[str, list[Prompt]] = {}
    for record in records:
        example = sft_view(record)
        if isinstance(example, ChatExample):
            last = example.trainable_turns[-1]
            prompt = {"messages": example.messages[:last], "reference": example.messages[last]["content"]}
        elif example.prompt:
            prompt = {"text": example.prompt, "reference": example.completion}
        else:
            continue
        by_task.setdefault(example.task_type, []).append(
            {"id": prompt_id(record.where), **prompt, "task_type": example.task_type}
        )
    queues = list(by_task.values())
    chosen: list[Prompt] = []
    for rank in range(max(map(len, queues), default=0)):
        chosen += [queue[rank] for queue in queues if rank < len(queue)]
    return chosen[:limit]


def prompt_text(prompt: Prompt) -> str:
    """What the prompt asks: its last message (the user's turn), or its text."""
    return prompt["messages"][-1]["content"] if "messages" in prompt else prompt["text"]

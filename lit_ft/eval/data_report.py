"""A report on a dataset read exactly as training reads it, so data problems are seen before training.

Per split and task type: rows and examples, token lengths (percentiles) of the prompt and the answer,
truncation and drops at the configured ``max_length``/``truncation``, exact and near-duplicate prompts (within the
split, and validation prompts duplicated in training: leakage), very short answers, and invalid rows.

Definitions:

- rows are read by the DataModule's readers and validated by :func:`~lit_ft.data.preference_rows.sft_view`
  (``parse_sft_row``; a preference pair by its chosen side); a row that training would refuse (a bad field, a
  chat template that cannot render it) is listed with its place and reason instead of stopping the report;
- token lengths come from ``tokenize_example`` (no length limit): *answer* tokens are those that carry loss
  (assistant turns with their end-of-turn token, or completion + EOS), *prompt* tokens all the others (chat
  template, system, user turns);
- truncation, drops and blocks are counted by the DataModule's own ``encode_source`` into :class:`SplitStats`,
  i.e. what training would do; one row at a time, so under ``long_documents=blocks`` a long document is cut into
  blocks on its own (training concatenates a source's long documents first: the same documents split into as many
  blocks or fewer);
- the *prompt text* of a row is its conversation before the last trained answer without the system message (or
  the text prompt; the text itself for raw-text rows). Exact duplicates are prompts equal after lower-casing and
  collapsing whitespace. Near duplicates are pairs whose sets of word ``shingle_size``-grams (lower-cased words)
  have a Jaccard similarity ``|A & B| / |A | B|`` of at least ``threshold`` and are not exact duplicates; pairs are
  found exactly (no sampling) with prefix filtering (Bayardo et al., 2007, "Scaling up all pairs similarity
  search"), so large sets stay fast unless most prompts share most shingles;
- a very short answer has at most ``short_answer_tokens`` tokens of text (its last answer, tokenised alone).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from lit_ft.data.batch import loss_tokens
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.preference_rows import sft_view
from lit_ft.data.readers import DataError, Record
from lit_ft.data.rows import ChatExample, SFTExample
from lit_ft.data.stats import SplitStats
from lit_ft.data.tokenize import tokenize_example

PERCENTILES = (50, 90, 99)


@dataclass
class RowInfo:
    split: str
    where: str
    task_type: str
    prompt: str
    answer: str
    prompt_tokens: int
    answer_tokens: int


def prompt_and_answer(example: SFTExample) -> tuple[str, str]:
    """The prompt text (see module doc) and the last trained answer of an example."""
    if isinstance(example, ChatExample):
        last = example.trainable_turns[-1]
        before = [m["content"] for m in example.messages[:last] if m["role"] != "system"]
        return "\n".join(before), example.messages[last]["content"]
    return example.prompt or example.completion, example.completion


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def shingles(text: str, size: int) -> frozenset[tuple[str, ...]]:
    """Word ``size``-grams of the lower-cased words (one shingle of all words when there are fewer)."""
    words = re.findall(r"\w+", text.lower())
    return frozenset(tuple(words[i : i + size]) for i in range(max(1, len(words) - size + 1)))


def near_duplicate_pairs(sets: Sequence[frozenset], threshold: float) -> list[tuple[int, int, float]]:
    """All pairs ``(i, j, jaccard)``, ``i < j``, with Jaccard similarity >= ``threshold`` (> 0), exactly.

    Prefix filtering: order every set's elements from rarest to most common; two sets with Jaccard >= t share
    at least ``ceil(t * |x|)`` elements, so each one's first ``|x| - ceil(t * |x|) + 1`` elements meet the
    other's; only pairs meeting in an inverted index of those prefixes are compared.
    """
    frequency = Counter(element for s in sets for element in s)
    index: dict[Any, list[int]] = defaultdict(list)
    pairs = []
    for i, elements in enumerate(sets):
        if not elements:
            continue
        ordered = sorted(elements, key=lambda e: (frequency[e], e))
        candidates: set[int] = set()
        for element in ordered[: len(elements) - math.ceil(threshold * len(elements)) + 1]:
            candidates.update(index[element])
            index[element].append(i)
        for j in sorted(candidates):
            similarity = len(elements & sets[j]) / len(elements | sets[j])
            if similarity >= threshold:
                pairs.append((j, i, similarity))
    return pairs


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    result = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    return {**result, "max": float(max(values)), "mean": float(np.mean(values))}


def read_split(
    datamodule: FineTuneDataModule, split: str, records: list[Record], short_answer_tokens: int
) -> tuple[list[RowInfo], dict[str, Any]]:
    """Row infos of a split and its per-task counts (examples, truncation, drops, short answers, invalid rows)."""
    tokenizer = datamodule.tokenizer
    rows: list[RowInfo] = []
    stats: dict[str, SplitStats] = {}
    invalid: list[str] = []
    short: dict[str, list[str]] = defaultdict(list)
    for record in records:
        try:  # a row training would refuse (a bad field, a template that cannot render it) is listed, not fatal
            example = sft_view(record, forbidden=tokenizer.all_special_tokens)  # preference rows: the chosen side
            full = tokenize_example(tokenizer, example)
            task, task_stats = example.task_type, stats.get(example.task_type, SplitStats())
            list(datamodule.encode_source([record], task_stats))  # training's own rules; counts only on success
        except (DataError, ValueError) as error:
            invalid.append(str(error) if isinstance(error, DataError) else f"{record.where}: {error}")
            continue
        stats[task] = task_stats
        answer_tokens = int(loss_tokens(full["labels"]))
        prompt, answer = prompt_and_answer(example)
        rows.append(
            RowInfo(split, record.where, task, prompt, answer, len(full["input_ids"]) - answer_tokens, answer_tokens)
        )
        if len(tokenizer(answer, add_special_tokens=False)["input_ids"]) <= short_answer_tokens:
            short[task].append(record.where)
    per_task = {}
    for task in sorted(stats):
        task_rows = [r for r in rows if r.task_type == task]
        s = stats[task]
        per_task[task] = {
            "rows": s.rows,
            "examples": s.examples,
            "truncated": s.truncated_examples,
            "truncated_tokens": s.truncated_tokens,
            "dropped_too_long": s.dropped_too_long,
            "dropped_no_loss_tokens": s.dropped_no_loss_tokens,
            "documents_split": s.documents_split,
            "blocks": s.blocks,
            "prompt_tokens": _percentiles([r.prompt_tokens for r in task_rows]),
            "answer_tokens": _percentiles([r.answer_tokens for r in task_rows]),
            "short_answers": len(short[task]),
            "short_answer_rows": short[task][:10],
        }
    return rows, {"per_task": per_task, "invalid_rows": len(invalid), "invalid": invalid[:20]}


def duplicates(rows: list[RowInfo], threshold: float, shingle_size: int, shown: int = 5) -> dict[str, Any]:
    """Exact and near-duplicate prompts per split and task type, and validation prompts that occur in training.

    A row counts once: as an exact duplicate when an earlier row has the same normalised prompt, else as a near
    duplicate when an earlier row is near it. Within a split the later row counts; across splits, the
    validation row (rows are ordered train first).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[normalise(row.prompt)].append(i)
    exact_pairs = [(g[0], j) for g in groups.values() for j in g[1:]]
    near = [
        (i, j, s)
        for i, j, s in near_duplicate_pairs([shingles(r.prompt, shingle_size) for r in rows], threshold)
        if normalise(rows[i].prompt) != normalise(rows[j].prompt)
    ]
    report: dict[str, Any] = {"threshold": threshold, "shingle_size": shingle_size, "per_split": {}, "cross_split": {}}
    counted: dict[str, set[int]] = defaultdict(set)  # split name (or "cross") -> rows already counted
    for kind, pairs in (("exact", exact_pairs), ("near", near)):
        examples = []
        before = {where: set(members) for where, members in counted.items()}
        for i, j, *rest in pairs:
            where = rows[j].split if rows[i].split == rows[j].split else "cross"
            if j in before.get(where, set()):
                continue  # already an exact duplicate
            counted[where].add(j)
            examples.append(
                {"a": rows[i].where, "b": rows[j].where, **({"jaccard": round(rest[0], 3)} if rest else {})}
            )
        for where, members in counted.items():
            new = members - before.get(where, set())
            if where == "cross":
                report["cross_split"][kind] = len(new)
            elif new:
                report["per_split"].setdefault(where, {})[kind] = dict(
                    sorted(Counter(rows[j].task_type for j in new).items())
                )
        report["cross_split"].setdefault(kind, 0)
        report[f"{kind}_examples"] = examples[:shown]
    return report


def data_report(
    datamodule: FineTuneDataModule,
    near_duplicate_threshold: float = 0.8,
    shingle_size: int = 3,
    short_answer_tokens: int = 2,
) -> dict[str, Any]:
    """The report of the datamodule's train and validation splits (see the module docstring)."""
    train_records, val_records = datamodule.train_and_val_records()
    report: dict[str, Any] = {
        "max_length": datamodule.max_length,
        "truncation": datamodule.truncation,
        "splits": {},
    }
    rows: list[RowInfo] = []
    for split, records in (("train", train_records), ("val", val_records)):
        if records:
            split_rows, report["splits"][split] = read_split(datamodule, split, records, short_answer_tokens)
            rows += split_rows
    report["duplicates"] = duplicates(rows, near_duplicate_threshold, shingle_size)
    return report


def _fmt(stats: dict[str, float]) -> str:
    return "/".join(f"{stats[k]:.0f}" for k in ("p50", "p90", "max")) if stats else "-"


def _place(where: str) -> str:
    """``where`` relative to the working folder when it lies inside it."""
    relative = os.path.relpath(where)
    return where if relative.startswith("..") else relative


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """One table per split (rows: counts and lengths, columns: task types), then duplicates across splits."""
    console = console or Console()
    found = report["duplicates"]
    for split, data in report["splits"].items():
        within = found["per_split"].get(split, {})
        tasks = data["per_task"]
        table = Table(
            title=f"{split} split: max_length {report['max_length']}, truncation {report['truncation']}",
            caption="token lengths: p50/p90/max (p99 and mean in data_report.json)",
        )
        table.add_column("", no_wrap=True)
        for task in tasks:
            table.add_column(task, justify="right")
        rows = tasks.values()
        lines = {
            "rows": [r["rows"] for r in rows],
            "examples kept": [r["examples"] for r in rows],
            "prompt tokens": [_fmt(r["prompt_tokens"]) for r in rows],
            "answer tokens": [_fmt(r["answer_tokens"]) for r in rows],
            "truncated": [r["truncated"] for r in rows],
            "dropped": [r["dropped_too_long"] + r["dropped_no_loss_tokens"] for r in rows],
            "cut into blocks": [f"{r['documents_split']} -> {r['blocks']}" for r in rows],
            "exact dup prompts": [within.get("exact", {}).get(t, 0) for t in tasks],
            "near dup prompts": [within.get("near", {}).get(t, 0) for t in tasks],
            "very short answers": [r["short_answers"] for r in rows],
        }
        if not any(r["documents_split"] for r in rows):
            del lines["cut into blocks"]  # long_documents=truncate, or no row longer than max_length
        for name, values in lines.items():
            table.add_row(name, *map(str, values))
        console.print(table)
        if data["invalid_rows"]:
            console.print(f"[red]{data['invalid_rows']} invalid rows[/] (training stops at the first):")
            for message in data["invalid"]:
                console.print(f"  {message}")
    cross = found["cross_split"]
    console.print(
        f"validation prompts also in training: {cross.get('exact', 0)} exact, {cross.get('near', 0)} near "
        f"(Jaccard of word {found['shingle_size']}-grams >= {found['threshold']})"
    )
    for kind in ("exact", "near"):
        for pair in found[f"{kind}_examples"]:
            similarity = f" (Jaccard {pair['jaccard']})" if "jaccard" in pair else ""
            console.print(f"  {kind} duplicate: {_place(pair['a'])} ~ {_place(pair['b'])}{similarity}")

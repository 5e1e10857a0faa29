"""Blind A/B comparison by people: a self-contained HTML page of paired answers, and the win rates it yields.

``export`` pairs the answers of two eval runs to the same prompts (``generations.jsonl``, matched by ``id``),
shuffles the items and, per item, which model's answer is shown as "Answer 1" (left) and "Answer 2" (right),
both from ``seed``. It writes two files:

- ``ab.html``: one file, no network (inline CSS and JS, data embedded as JSON); the rater clicks "Answer 1 is
  better", "Tie" or "Answer 2 is better" per item (kept in the browser's local storage), then downloads
  ``ab_choices_<page>.json`` (also shown as text to copy): ``{"page_id", "rater", "saved_at",
  "choices": {item: "left" | "right" | "tie"}}``. The page holds no model names, so it stays blind;
- ``ab_key.json``: which model is on the left of each item; keep it from the raters.

``score`` joins choice files (one per rater) with the key and reports, per task type and overall, the wins of
A and B, ties, and A's win rate ``(wins_A + ties / 2) / judged``.

CLI: ``python -m lit_ft.eval.blind_ab export A/generations.jsonl B/generations.jsonl --out ab/`` then
``python -m lit_ft.eval.blind_ab score ab/ab_key.json ab_choices_*.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lit_ft.eval.judge import paired_rows, render_request
from lit_ft.utils.io import write_json_atomic

CHOICES = ("left", "right", "tie")


def build_items(
    file_a: str | Path, file_b: str | Path, seed: int = 0, max_items: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(page items, key)``: items in a seeded random order, each answer pair in a seeded random side order."""
    rng = random.Random(seed)
    pairs = paired_rows(file_a, file_b)
    rng.shuffle(pairs)
    items, key_items = [], {}
    for index, (a, b) in enumerate(pairs[:max_items]):
        item = f"i{index}"
        a_left = rng.random() < 0.5
        left, right = (a, b) if a_left else (b, a)
        items.append(
            {
                "item": item,
                "task_type": a["task_type"],
                "request": render_request(a.get("messages"), a.get("text")),
                "reference": a.get("reference"),
                "left": left["generation"],
                "right": right["generation"],
            }
        )
        key_items[item] = {"id": a["id"], "task_type": a["task_type"], "left": "a" if a_left else "b"}
    page_id = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:12]
    return items, {"page_id": page_id, "a": str(file_a), "b": str(file_b), "seed": seed, "items": key_items}


def render_page(items: list[dict[str, Any]], page_id: str, title: str) -> str:
    """The HTML page; the data is embedded as JSON with ``<``, ``>`` and ``&`` escaped, so no answer text can
    close the script element, and the page script only ever sets it as text."""
    data = json.dumps({"page_id": page_id, "items": items}, ensure_ascii=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = resources.files("lit_ft.eval").joinpath("blind_ab.html").read_text(encoding="utf-8")
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return template.replace("__TITLE__", safe_title).replace("__DATA__", data)


def export(
    file_a: str | Path,
    file_b: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    max_items: int | None = None,
    title: str = "Which answer is better?",
) -> tuple[Path, Path]:
    """Write ``ab.html`` and ``ab_key.json`` to ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items, key = build_items(file_a, file_b, seed, max_items)
    page, key_path = out_dir / "ab.html", out_dir / "ab_key.json"
    page.write_text(render_page(items, key["page_id"], title), encoding="utf-8")
    write_json_atomic(key_path, key)
    return page, key_path


def _tally(choices: list[tuple[str, str]]) -> dict[str, float]:
    """``choices``: (task, winner in a|b|tie) -> counts and A's win rate."""
    wins_a = sum(w == "a" for _, w in choices)
    wins_b = sum(w == "b" for _, w in choices)
    ties = len(choices) - wins_a - wins_b
    return {
        "n": len(choices),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "win_rate_a": (wins_a + ties / 2) / len(choices),
    }


def score(key_path: str | Path, choice_paths: Sequence[str | Path]) -> dict[str, Any]:
    """Win rates of A per task type and overall, over every rater's choices (items left unjudged are skipped)."""
    key = json.loads(Path(key_path).read_text())
    judged: list[tuple[str, str]] = []
    raters = []
    for path in choice_paths:
        choices = json.loads(Path(path).read_text())
        if choices.get("page_id") != key["page_id"]:
            raise ValueError(
                f"{path} answers page {choices.get('page_id')}, but {key_path} is the key of {key['page_id']}"
            )
        raters.append(choices.get("rater") or Path(path).stem)
        for item, choice in choices["choices"].items():
            if item not in key["items"] or choice not in CHOICES:
                raise ValueError(f"{path}: unknown item {item!r} or choice {choice!r}")
            entry = key["items"][item]
            right = "b" if entry["left"] == "a" else "a"
            judged.append((entry["task_type"], {"left": entry["left"], "right": right, "tie": "tie"}[choice]))
    if not judged:
        raise ValueError("no judged items in the choice files")
    per_task = {task: _tally([c for c in judged if c[0] == task]) for task in sorted({t for t, _ in judged})}
    return {"a": key["a"], "b": key["b"], "raters": raters, "overall": _tally(judged), "per_task": per_task}


def print_scores(report: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"Blind A/B ({len(report['raters'])} rater(s)): A = {report['a']}  vs  B = {report['b']}")
    for column in ("task_type", "judged", "A wins", "ties", "B wins", "win rate A"):
        table.add_column(column, justify="left" if column == "task_type" else "right")
    for task, row in [*report["per_task"].items(), ("all", report["overall"])]:
        table.add_row(
            task, str(row["n"]), str(row["wins_a"]), str(row["ties"]), str(row["wins_b"]), f"{row['win_rate_a']:.3f}"
        )
    (console or Console()).print(table)


def main(argv: Sequence[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="python -m lit_ft.eval.blind_ab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("export", help="write ab.html and ab_key.json")
    make.add_argument("a", help="generations.jsonl of model A")
    make.add_argument("b", help="generations.jsonl of model B")
    make.add_argument("--out", required=True, help="folder for ab.html and ab_key.json")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--max-items", type=int, default=None)
    make.add_argument("--title", default="Which answer is better?")
    read = commands.add_parser("score", help="win rates from the key and the raters' choice files")
    read.add_argument("key", help="ab_key.json")
    read.add_argument("choices", nargs="+", help="ab_choices_*.json downloaded from the page")
    read.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.command == "export":
        page, key = export(args.a, args.b, args.out, args.seed, args.max_items, args.title)
        print(f"page: {page}\nkey (keep it from raters): {key}")
        return page, key
    report = score(args.key, args.choices)
    if args.out:
        write_json_atomic(args.out, report)
    print_scores(report)
    return report


if __name__ == "__main__":
    main()

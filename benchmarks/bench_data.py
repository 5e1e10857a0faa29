"""The data path at scale: 200,000 generated chat rows tokenised once, then read back from the example cache.

    python benchmarks/bench_data.py [--rows 200000]

It generates the rows (seeded legal-sounding chats: 1-3 turns, a system prompt on one in three, four task types;
nothing is shipped or downloaded) and runs ``python train.py`` as a user would, three times, each in a fresh
process on the tiny model with ``validate_before=false`` so that only the data path is measured:

1. **first run**, empty cache: reading, validating and tokenising every row into Arrow files; its rows/s (from the
   build time the run logs) and the process's peak resident set;
2. **second run**, the same command: from process start to the end of the first optimizer step, and the resident
   set then; the examples are memory-mapped from the cache, not tokenised again;
3. **baseline**, the same command on 1,000 of the rows: what the resident set is without the data, so that
   second - baseline is the memory the 200,000 rows cost.

The numbers go to the ``bench_data`` section of ``benchmarks/RESULTS.md``, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import load_average, write_section  # noqa: E402

# Words of the shipped legal training set: a realistic mix of tokens per word.
WORDS = sorted(
    {
        word
        for line in (REPO / "data" / "legal" / "train.jsonl").read_text().splitlines()
        for message in json.loads(line)["messages"]
        for word in message["content"].split()
    }
)
TASK_TYPES = ("classify", "flag", "summarize", "revise")


class FirstStepClock(L.Callback):
    """Writes, once the first optimizer step has run, the seconds since the process started and its resident set
    (now and at its peak so far) to ``out``. Added to a run by ``+callbacks.clock._target_=bench_data.FirstStepClock``."""

    def __init__(self, out: str) -> None:
        self.out, self.done = Path(out), False

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if self.done:
            return
        self.done = True
        process = psutil.Process()
        seconds = time.time() - process.create_time()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
        self.out.write_text(
            json.dumps({"seconds": seconds, "rss_mb": process.memory_info().rss / 2**20, "peak_mb": peak_mb})
        )


def chat_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    rows = []
    for index in range(count):
        messages = [{"role": "system", "content": text(12)}] if index % 3 == 0 else []
        for _ in range(rng.choice((1, 1, 2, 3))):
            messages.append({"role": "user", "content": text(rng.randint(20, 120))})
            messages.append({"role": "assistant", "content": text(rng.randint(5, 60))})
        rows.append({"messages": messages, "task_type": TASK_TYPES[index % len(TASK_TYPES)]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with path.open("w") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def run(train_file: Path, val_file: Path, cache: Path, work: Path, name: str) -> dict:
    """``python train.py`` on ``train_file``: its first-step clock, the build time it logged, and its wall time."""
    clock = work / f"{name}.json"
    command = [
        sys.executable,
        "train.py",
        "debug=tiny",
        "data=sft",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "data.max_length=512",
        f"data.cache_dir={cache}",
        "validate_before=false",
        "trainer.max_steps=1",
        "callbacks.progress_bar=null",
        f"paths.log_dir={work / name}",
        "+callbacks.clock._target_=bench_data.FirstStepClock",
        f"+callbacks.clock.out={clock}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)])}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    log = next((work / name).rglob("train.log")).read_text()
    built = re.search(r"Tokenised examples written to \S+ \(([\d.]+) MiB\) in ([\d.]+) s", log)
    return {
        **json.loads(clock.read_text()),
        "wall_s": wall,
        "build_s": float(built.group(2)) if built else None,
        "cache_mib": float(built.group(1)) if built else None,
        "reused": "Reusing the tokenised examples" in log,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="lit_ft-bench-data-") as folder:
        work = Path(folder)
        rows = chat_rows(args.rows + 500)
        train = write_jsonl(work / "train.jsonl", rows[: args.rows])
        val = write_jsonl(work / "val.jsonl", rows[args.rows :])
        small = write_jsonl(work / "small.jsonl", rows[:1000])
        megabytes = train.stat().st_size / 2**20
        first = run(train, val, work / "cache", work, "first")
        second = run(train, val, work / "cache", work, "second")
        baseline = run(small, val, work / "cache", work, "baseline")
    if not second["reused"] or first["reused"]:
        raise SystemExit("the second run did not read the cache the first one built")
    growth = second["rss_mb"] - baseline["rss_mb"]
    lines = [
        "# Data path: tokenise once, then read from the cache",
        "",
        "Written by `python benchmarks/bench_data.py` on "
        f"{time.strftime('%Y-%m-%d')}: {args.rows:,} generated chat rows ({megabytes:.0f} MB of JSONL; 1-3 turns, "
        "SmolLM2's chat template, assistant-only labels, max length 512), each run `python train.py debug=tiny "
        "validate_before=false trainer.max_steps=1` in a fresh process (tiny model, so the data path dominates). "
        f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}.",
        "",
        "| run | what | measured |",
        "|---|---|---|",
        f"| first | tokenise {args.rows:,} rows into the cache ({first['cache_mib']:.0f} MiB of Arrow) | "
        f"{first['build_s']:.0f} s, **{args.rows / first['build_s']:,.0f} rows/s**; peak RSS {first['peak_mb']:,.0f} MB |",
        f"| second | start to first optimizer step, examples memory-mapped from the cache | "
        f"**{second['seconds']:.1f} s**; RSS {second['rss_mb']:,.0f} MB |",
        f"| baseline | the same on 1,000 rows | {baseline['seconds']:.1f} s; RSS {baseline['rss_mb']:,.0f} MB |",
        f"| | RSS the {args.rows:,} rows add (second - baseline) | **{growth:,.0f} MB** |",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(args.out, "bench_data", text)


if __name__ == "__main__":
    main()

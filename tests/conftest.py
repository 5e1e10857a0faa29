"""Shared fixtures: the real SmolLM2 tokenizer, a tiny random Llama, a CPU trainer for it, small data files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_ft.models import load_tokenizer, tiny_llama
from tests.support import helpers

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tokenised examples that runs of the tests cache (``data.cache_dir``) go to a folder of this session, not to the
    user's cache; subprocesses inherit it."""
    os.environ.setdefault("LIT_FT_DATA_CACHE", tempfile.mkdtemp(prefix="lit_ft-test-data-cache-"))


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture
def one_thread():
    """Same kernels and reduction order in every run (runs compared bit for bit), and no OpenMP pool for a
    forked process to inherit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model(tokenizer):
    return tiny_llama(tokenizer, seed=0)


@pytest.fixture
def tiny_trainer() -> Callable[..., L.Trainer]:
    """Builds the in-process CPU trainer of a test (:func:`tests.support.helpers.tiny_trainer`: no logger,
    checkpoints, progress bar or model summary): ``tiny_trainer(max_steps=1, callbacks=[...])``."""
    return helpers.tiny_trainer


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(user: str, answer: str, task_type: str = "default", system: str | None = None) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": messages, "task_type": task_type}


def arithmetic_rows(count: int) -> list[dict]:
    """A learnable toy set: 'What is a plus b?' -> 'SUM: a+b', two task types (seeded)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(count):
        a, b = (int(x) for x in torch.randint(1, 20, (2,), generator=generator))
        rows.append(chat(f"What is {a} plus {b}?", f"SUM: {a + b}", "add" if i % 2 else "sum"))
    return rows


@pytest.fixture
def arithmetic_files(tmp_path):
    """:func:`arithmetic_rows` as train (40 rows) and validation (8 rows) files."""
    rows = arithmetic_rows(48)
    return write_jsonl(tmp_path / "train.jsonl", rows[:40]), write_jsonl(tmp_path / "val.jsonl", rows[40:])

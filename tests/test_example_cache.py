"""Tokenised examples built once into Arrow files, cached under a key of what they depend on, memory-mapped, and
reused by later runs, sweep jobs and ranks (lit_ft/data/cache.py, example_store.py, example_views.py)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
import torch

from lit_ft.data import SFTDataModule
from lit_ft.data.cache import build_once
from lit_ft.data.example_store import EXAMPLE_SCHEMA, ArrowExamples, write_examples
from lit_ft.data.formats import parse_sft_row
from lit_ft.data.readers import Record
from lit_ft.data.tokenize import tokenize_example
from tests.conftest import REPO, arithmetic_rows, write_jsonl
from tests.support.helpers import run_entry_point


def data_module(tokenizer, train_file, cache_dir, **settings):
    module = SFTDataModule(tokenizer, train_file, val_ratio=0.25, max_length=64, cache_dir=cache_dir, **settings)
    module.setup("fit")
    return module


def forbid_tokenising(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(SFTDataModule, "encode_source", refuse)


def test_a_second_run_reads_the_cached_examples_without_tokenising(tmp_path, tokenizer, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(24))
    first = data_module(tokenizer, train, tmp_path / "cache")
    [folder] = [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    assert sorted(p.name for p in folder.iterdir()) == [
        "stats.json",
        "train-0.arrow",
        "val.arrow",
        "val_records.jsonl",
    ]
    forbid_tokenising(monkeypatch)
    second = data_module(tokenizer, train, tmp_path / "cache")
    assert second._examples_dir == folder
    assert list(second.train_examples) == list(first.train_examples)
    assert list(second.val_examples) == list(first.val_examples)
    assert {name: stats.to_dict() for name, stats in second.stats.items()} == {
        name: stats.to_dict() for name, stats in first.stats.items()
    }
    assert second.val_records() == first._read_splits().val  # the raw validation rows, for prompts
    assert second.task_names == first.task_names == ["add", "sum"]


def test_the_examples_read_back_are_the_tokenised_rows(tmp_path, tokenizer):
    rows = arithmetic_rows(6)
    module = SFTDataModule(tokenizer, write_jsonl(tmp_path / "t.jsonl", rows), max_length=64, cache_dir=tmp_path)
    module.setup("fit")
    assert len(module.train_examples) == len(rows)
    for index, (row, example) in enumerate(zip(rows, module.train_examples)):
        expected = tokenize_example(tokenizer, parse_sft_row(Record(f"t.jsonl:{index + 1}", row)))
        assert example["input_ids"] == expected["input_ids"] and example["labels"] == expected["labels"]
        assert example["task_ids"] == [module.task_names.index(row["task_type"])] * len(expected["input_ids"])


@pytest.mark.parametrize(
    ("change", "same_key"),
    [
        ({"batch_size": 2, "packing": True, "group_by_length": True, "padding_free": True}, True),
        ({"max_length": 32}, False),
        ({"truncation": "left"}, False),
        ({"val_ratio": 0.5}, False),
        ({"long_documents": "blocks"}, False),
        ({"chat_template": "chatml"}, False),
    ],
)
def test_the_key_changes_with_what_changes_the_examples_and_only_that(tmp_path, tokenizer, change, same_key):
    train = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(8))
    settings = {"val_ratio": 0.25, "max_length": 64, "cache_dir": tmp_path / "cache"}
    before = SFTDataModule(tokenizer, train, **settings)._examples_folder()
    after = SFTDataModule(tokenizer, train, **{**settings, **change})._examples_folder()
    assert (before == after) == same_key


def test_edited_source_contents_at_the_same_path_are_tokenised_again(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(8))
    first = data_module(tokenizer, train, tmp_path / "cache")
    write_jsonl(train, arithmetic_rows(9))
    second = data_module(tokenizer, train, tmp_path / "cache")
    assert second._examples_dir != first._examples_dir
    assert second.stats["train"].rows + second.stats["val"].rows == 9


def test_a_failed_build_leaves_nothing_behind_and_fails_again_the_same_way(tmp_path, tokenizer):
    rows = [*arithmetic_rows(4), {"messages": [{"role": "wizard", "content": "hi"}]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    for _ in range(2):
        with pytest.raises(ValueError, match="train.jsonl:5"):
            data_module(tokenizer, train, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_examples_are_memory_mapped_not_copied(tmp_path):
    path = tmp_path / "examples.arrow"
    rows = [
        {"input_ids": list(range(i, i + 500)), "labels": [-100] * 10 + list(range(i, i + 490)), "task_type": str(i % 3)}
        for i in range(4000)
    ]
    assert write_examples(path, iter(rows), EXAMPLE_SCHEMA) == 4000
    allocated = pa.total_allocated_bytes()
    store = ArrowExamples(path)
    assert pa.total_allocated_bytes() - allocated < 2**20 < path.stat().st_size  # 16 MB on disk, not in memory
    assert len(store) == 4000 and store[3999] == rows[3999] and store[-1] == rows[-1] and store[1:3] == rows[1:3]
    assert list(store) == rows
    assert store.lengths().tolist() == [500] * 4000 and store.loss_tokens().tolist() == [490] * 4000
    codes, names = store.task_type_codes()
    assert [names[code] for code in codes] == [row["task_type"] for row in rows]
    assert len(pickle.dumps(store)) < 1000 and pickle.loads(pickle.dumps(store))[7] == rows[7]  # to workers by path


def test_loader_workers_serve_the_batches_of_the_main_process(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", arithmetic_rows(24))
    batches = []
    for workers in (0, 2):
        module = data_module(tokenizer, train, tmp_path / "cache", num_workers=workers, batch_size=4, packing=True)
        batches.append(list(module.train_dataloader()))
    for main, worker in zip(*batches, strict=True):
        assert main.keys() == worker.keys() and all(torch.equal(main[k], worker[k]) for k in main)


def test_concurrent_builds_of_one_key_build_once_and_all_read_it(tmp_path):
    """Two processes (the ranks of a node, or parallel sweep jobs) want the same folder: one builds, the other
    waits for it."""
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from lit_ft.data.cache import build_once

        def build(into):
            with open({str(tmp_path / "builds.log")!r}, "a") as log:
                log.write(f"{{os.getpid()}}\\n")
            time.sleep(2)
            (into / "done").write_text("yes")

        build_once(Path({str(tmp_path / "key")!r}), build)
        print((Path({str(tmp_path / "key")!r}) / "done").read_text())
        """
    )
    env = {"PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0] and outputs == ["yes\n", "yes\n"]
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert build_once(tmp_path / "key", lambda into: pytest.fail("built again")) is False


def test_every_job_of_a_sweep_reuses_the_examples_the_first_built(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    result = run_entry_point(
        [
            "-m",
            "debug=tiny",
            "data=sft",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "trainer.max_steps=1",
            "callbacks.progress_bar=null",
            f"paths.log_dir={tmp_path / 'logs'}",
            "module.optimizer.lr=1e-3,2e-3",
        ]
    )
    logs = sorted((tmp_path / "logs").rglob("train.log"))
    assert len(logs) == 2, result.stdout[-2000:]
    texts = [log.read_text() for log in logs]
    assert sum("Tokenised examples written to" in text for text in texts) == 1
    assert sum("Reusing the tokenised examples" in text for text in texts) == 1
    summaries = [json.loads((log.parent / "summary.json").read_text()) for log in logs]
    assert summaries[0]["data"] == summaries[1]["data"]

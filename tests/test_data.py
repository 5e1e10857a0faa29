"""Reading, validating and batching data: clear errors, counted truncation, packing that keeps examples apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from lit_ft.data import Collator, DataError, SFTDataModule, pack_examples, read_records
from lit_ft.data.formats import parse_sft_row
from tests.conftest import REPO, chat, write_jsonl
from tests.support.helpers import compose_config

LEGAL = REPO / "data" / "legal"


def error_of(tmp_path, line: str) -> DataError:
    path = write_jsonl(tmp_path / "bad.jsonl", [chat("Hi", "Hello"), line])
    with pytest.raises(DataError) as info:
        for record in read_records(path):
            parse_sft_row(record)
    return info.value


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"messages": [{"role": "user", "content": "x"}', None, "malformed JSON"),
        (
            '{"messages": [{"role": "usr", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "messages[0].role",
            "unknown role",
        ),
        (
            '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}',
            "messages[0].content",
            "string",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}',
            "messages[1].content",
            "empty assistant",
        ),
        ('{"messages": [{"role": "assistant", "content": "y"}]}', "messages[0].role", "expected a user turn"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "messages", "no assistant turn"),
        ('{"prompt": "x"}', "completion", "missing"),
        ('{"txet": "x"}', None, "unknown row format"),
        ('{"text": "x", "task_type": 5}', "task_type", "non-empty string"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, line, field, message):
    error = error_of(tmp_path, line)
    assert error.where == f"{tmp_path / 'bad.jsonl'}:2"
    assert error.field == field
    assert message in str(error) and str(tmp_path / "bad.jsonl") + ":2" in str(error)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid UTF-8"):
        list(read_records(path))


def test_parquet_and_datasets_folder_are_read(tmp_path):
    from datasets import Dataset

    rows = [{"prompt": "a", "completion": "b", "task_type": "t"}, {"prompt": "c", "completion": "d", "task_type": "t"}]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "folder"))
    for path in (tmp_path / "d.parquet", tmp_path / "folder"):
        records = list(read_records(path))
        assert [r.row["completion"] for r in records] == ["b", "d"]
        assert records[1].where.endswith(":1")  # Arrow rows are placed by index from 0


def test_a_datasets_folder_with_splits_gives_training_and_validation_rows(tmp_path, tokenizer):
    from datasets import Dataset, DatasetDict

    train = [chat(f"train question {i}", "answer", "t") for i in range(3)]
    validation = [chat(f"validation question {i}", "answer", "t") for i in range(2)]
    splits = {"train": Dataset.from_list(train), "validation": Dataset.from_list(validation)}
    DatasetDict(splits).save_to_disk(str(tmp_path / "both"))
    dm = SFTDataModule(tokenizer, tmp_path / "both", tmp_path / "both")  # one folder for both, as the hub has it
    train_rows, val_rows = dm.train_and_val_records()
    assert [r.row["messages"][0]["content"] for r in val_rows] == ["validation question 0", "validation question 1"]
    assert len(train_rows) == 3 and val_rows[0].where.endswith("[validation]:0")
    DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(validation)}).save_to_disk(
        str(tmp_path / "test_split")
    )
    assert len(list(read_records(tmp_path / "test_split", ("validation", "test")))) == 2  # 'test' when no 'validation'
    DatasetDict({"train": Dataset.from_list(train)}).save_to_disk(str(tmp_path / "only_train"))
    with pytest.raises(DataError, match=r"no split 'validation' or 'test' \(has \['train'\]\)"):
        list(read_records(tmp_path / "only_train", ("validation", "test")))


def test_datamodule_counts_truncation_and_drops(tmp_path, tokenizer):
    long_prompt = "word " * 200
    rows = [chat("short", "answer", "a"), chat(long_prompt, "answer", "b"), chat("x " * 30, "y " * 30, "a")]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = SFTDataModule(tokenizer, train, max_length=64)
    dm.setup("fit")
    stats = dm.stats["train"]
    # row 2 loses its answer entirely (dropped, counted); row 3 is cut but keeps some answer tokens
    assert (stats.rows, stats.examples, stats.dropped_no_loss_tokens, stats.truncated_examples) == (3, 2, 1, 1)
    assert dm.task_names == ["a"]
    dropping = SFTDataModule(tokenizer, train, max_length=64, truncation="drop")
    dropping.setup("fit")
    assert (dropping.stats["train"].examples, dropping.stats["train"].dropped_too_long) == (1, 2)


def test_val_ratio_split_is_seeded_and_disjoint(tmp_path, tokenizer):
    rows = [chat(f"q{i}", f"a{i}", "t") for i in range(20)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    splits = []
    for _ in range(2):
        dm = SFTDataModule(tokenizer, path, val_ratio=0.25, seed=3)
        dm.setup("fit")
        splits.append(sorted(tuple(e["input_ids"]) for e in dm.val_examples))
    assert splits[0] == splits[1] and len(splits[0]) == 5
    assert not set(splits[0]) & {tuple(e["input_ids"]) for e in dm.train_examples}


def test_collator_pads_with_masks_and_task_ids(tokenizer):
    examples = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "task_ids": [1, 1, 1]},
        {"input_ids": [8], "labels": [8], "task_ids": [0]},
    ]
    batch = Collator(pad_token_id=0, pad_to_multiple_of=4)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["task_ids"].tolist() == [[1, 1, 1, -1], [0, -1, -1, -1]]


def test_packing_keeps_examples_whole_with_restarting_positions():
    examples = [{"input_ids": [i] * n, "labels": [i] * n, "task_ids": [i] * n} for i, n in enumerate([5, 3, 4, 2], 1)]
    packs = pack_examples(examples, max_length=8)
    assert sorted(len(p["input_ids"]) for p in packs) == [6, 8]
    for pack in packs:
        starts = [i for i, p in enumerate(pack["position_ids"]) if p == 0]
        for start, end in zip(starts, starts[1:] + [len(pack["input_ids"])]):
            segment = pack["input_ids"][start:end]
            assert len(set(segment)) == 1 and len(segment) == examples[segment[0] - 1]["input_ids"].__len__()
            assert pack["task_ids"][start:end] == segment
            assert pack["position_ids"][start:end] == list(range(end - start))


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(tokenizer, attn_implementation):
    from lit_ft.models import tiny_llama

    model = tiny_llama(tokenizer, attn_implementation=attn_implementation).eval()
    lengths = [7, 12, 5]
    generator = torch.Generator().manual_seed(1)
    examples = [
        {
            "input_ids": torch.randint(10, 1000, (n,), generator=generator).tolist(),
            "labels": [1] * n,
            "task_ids": [0] * n,
        }
        for n in lengths
    ]
    batch = Collator(pad_token_id=tokenizer.pad_token_id)(pack_examples(examples, max_length=32))
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, 24)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example["input_ids"]]), use_cache=False).logits[0]
            n = len(example["input_ids"])
            torch.testing.assert_close(packed[offset : offset + n], alone, atol=1e-5, rtol=1e-4)
            offset += n


def jsonl_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def strings(value) -> list[str]:
    """Every string inside parsed JSON (lists and objects walked)."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in strings(item)]


def asked_clause(row: dict) -> str:
    """The clause a legal row asks about: its first user turn after the instruction (``<instruction>\\n\\n<clause>``)."""
    return next(m["content"] for m in row["messages"] if m["role"] == "user").split("\n\n", 1)[1]


def built_copy(tmp_path, drop_extra: bool = False) -> Path:
    """A copy of data/legal (bank, build.py, README.md) after its build.py ran; ``drop_extra`` empties
    bank/extra.jsonl first."""
    copy = tmp_path / "legal"
    shutil.copytree(LEGAL / "bank", copy / "bank")
    for name in ("build.py", "README.md"):
        shutil.copy(LEGAL / name, copy / name)
    if drop_extra:
        (copy / "bank" / "extra.jsonl").write_text("", encoding="utf-8")
    subprocess.run([sys.executable, str(copy / "build.py")], check=True, capture_output=True)
    return copy


def test_legal_build_reproduces_the_shipped_files(tmp_path):
    # build.py is deterministic and the shipped files (README statistics included) are what the bank builds
    copy = built_copy(tmp_path)
    for name in ("train.jsonl", "train_extra.jsonl", "val.jsonl", "val_prompts.jsonl", "test.jsonl", "README.md"):
        assert (copy / name).read_bytes() == (LEGAL / name).read_bytes(), name


def test_legal_extra_clauses_are_training_only(tmp_path):
    extra = jsonl_rows(LEGAL / "bank" / "extra.jsonl")
    types = {c["type"] for c in jsonl_rows(LEGAL / "bank" / "test.jsonl")}
    # the 60 clauses written for training: c121-c180, 5 of each of the 12 types, 2 of those 5 non-standard
    assert [c["id"] for c in extra] == [f"c{n}" for n in range(121, 181)]
    assert len(types) == 12 and Counter(c["type"] for c in extra) == Counter({t: 5 for t in types})
    assert Counter(c["type"] for c in extra if c["nonstandard"]) == Counter({t: 2 for t in types})
    # each is asked in train_extra.jsonl (a summarize, flag and classify row at least), and in no other file
    asked = {
        name: Counter(asked_clause(row) for row in jsonl_rows(LEGAL / f"{name}.jsonl"))
        for name in ("train_extra", "train", "val", "test")
    }
    texts = {c["text"] for c in extra}
    assert set(asked["train_extra"]) == texts and all(asked["train_extra"][text] >= 3 for text in texts)
    assert not texts & (asked["train"].keys() | asked["val"].keys() | asked["test"].keys())
    # they never enter the validation draw and have their own file: without them the build writes the same
    # training, validation and test files
    copy = built_copy(tmp_path, drop_extra=True)
    for name in ("train.jsonl", "val.jsonl", "val_prompts.jsonl", "test.jsonl"):
        assert (copy / name).read_bytes() == (LEGAL / name).read_bytes(), name
    assert (copy / "train_extra.jsonl").read_text() == ""
    # data=legal_extra trains on both files
    cfg = compose_config(["data=legal_extra"], tmp_path)
    assert [Path(f).name for f in cfg.data.train_files] == ["train.jsonl", "train_extra.jsonl"]


def test_legal_test_split_is_held_out_and_parses(tokenizer):
    written = jsonl_rows(LEGAL / "bank" / "test.jsonl")
    bank = [row for path in sorted((LEGAL / "bank").glob("part*.jsonl")) for row in jsonl_rows(path)]
    splits = {name: jsonl_rows(LEGAL / f"{name}.jsonl") for name in ("train", "val", "test")}
    clauses = {name: {asked_clause(row) for row in rows} for name, rows in splits.items()}
    # the test split is the 24 clauses written for it, 2 of each of the 12 types
    assert clauses["test"] == {c["text"] for c in written} and len(clauses["test"]) == 24
    assert Counter(c["type"] for c in written) == Counter({t: 2 for t in {c["type"] for c in bank}})
    assert len({c["type"] for c in bank}) == 12
    # no test clause is asked in train or val, nor found in any other shipped file (the bank, preference pairs,
    # CPT prose, general chat)
    assert not clauses["test"] & (clauses["train"] | clauses["val"])
    held_out = {LEGAL / "test.jsonl", LEGAL / "bank" / "test.jsonl"}
    others = "\n".join(
        text
        for path in sorted(REPO.glob("data/**/*.jsonl"))
        if path not in held_out
        for text in strings(jsonl_rows(path))
    )
    assert [c["id"] for c in written if c["text"] in others] == []
    # rows per clause: one summarize, flag and classify row each; a revise row for each of the 10 non-standard
    # clauses and a seeded share of the 14 standard ones
    per_task = Counter(row["task_type"] for row in splits["test"])
    assert (per_task["summarize"], per_task["flag"], per_task["classify"]) == (24, 24, 24)
    assert sum(c["nonstandard"] is not None for c in written) == 10 <= per_task["revise"] <= 24
    assert len(splits["test"]) == sum(per_task.values())
    # read as eval.py reads it (eval_files=data/legal/test.jsonl): every row kept whole at the flagship's length
    dm = SFTDataModule(tokenizer, LEGAL / "train.jsonl", val_files=LEGAL / "test.jsonl", max_length=256)
    dm.setup("validate")
    stats = dm.stats["val"]
    assert (stats.rows, stats.examples, stats.truncated_examples) == (len(splits["test"]), len(splits["test"]), 0)

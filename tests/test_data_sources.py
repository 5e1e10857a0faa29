"""Data sources (issue 16, item 1): local files and ``datasets`` folders, datasets by name from the Hugging Face
cache (offline: nothing is downloaded), column mapping, task-type filtering counted in the stats, mixtures."""

from __future__ import annotations

import json

import pytest

from lit_ft.data import DataError, SFTDataModule
from lit_ft.data.mixing import mixture_counts
from lit_ft.data.sources import RowSource, source_list
from tests.conftest import chat, write_jsonl
from tests.support.helpers import compose_config, run_entry_point
from tests.support.hf_cache import cache_dataset

HUB_NAME = "my-org/legal-chats"
COLUMNS = {"messages": "conversation", "task_type": "category"}


def hub_row(i: int) -> dict:
    """A row in the hub dataset's own column names: ``conversation`` (role/content messages) and ``category``."""
    row = chat(f"Classify clause {i}.", f"TYPE: clause_{i}", "classify" if i % 2 else "flag")
    return {"conversation": row["messages"], "category": row["task_type"], "id": i}


def as_lit_ft_row(row: dict) -> dict:
    """The same row in lit-ft's field names, as a JSONL user would write it."""
    return {"messages": row["conversation"], "task_type": row["category"]}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An offline machine (``HF_DATASETS_OFFLINE=1``) whose datasets cache holds ``my-org/legal-chats``:
    4 training rows (ids 0-3) and 2 test rows (ids 4-5)."""
    import datasets

    cache = tmp_path / "hf_datasets"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))  # for python train.py
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets read the variables at import
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    rows = [hub_row(i) for i in range(6)]
    cache_dataset(cache, HUB_NAME, {"train": rows[:4], "test": rows[4:]})
    return cache


def tokens(examples: list[dict]) -> list[tuple[list[int], list[int]]]:
    return [(e["input_ids"], e["labels"]) for e in examples]


def test_a_parquet_file_and_a_datasets_folder_are_sources_as_paths_or_mappings(tmp_path, tokenizer):
    from datasets import Dataset, DatasetDict

    rows = [chat(f"question {i}", f"answer {i}", "t") for i in range(5)]
    Dataset.from_list(rows[:3]).to_parquet(str(tmp_path / "train.parquet"))
    DatasetDict({"train": Dataset.from_list(rows[:3]), "dev": Dataset.from_list(rows[3:])}).save_to_disk(
        str(tmp_path / "folder")
    )
    reference = SFTDataModule(tokenizer, write_jsonl(tmp_path / "rows.jsonl", rows[:3]), val_ratio=0.0)
    reference.setup("fit")
    dm = SFTDataModule(
        tokenizer,
        train_files=str(tmp_path / "train.parquet"),
        val_files=[{"path": str(tmp_path / "folder"), "split": "dev"}],  # a split named as the folder names it
    )
    dm.setup("fit")
    train, val = dm.train_and_val_records()
    assert [r.where for r in train] == [f"{tmp_path / 'train.parquet'}:{i}" for i in range(3)]
    assert [r.where for r in val] == [f"{tmp_path / 'folder'}[dev]:{i}" for i in range(2)]
    assert [r.row["messages"][0]["content"] for r in val] == ["question 3", "question 4"]
    assert tokens(dm.train_examples) == tokens(reference.train_examples)  # the same examples as from JSONL
    with pytest.raises(DataError, match=r"folder: no split 'validation' or 'test' \(has \['dev', 'train'\]\)"):
        SFTDataModule(tokenizer, train_files=str(tmp_path / "folder"), val_files=str(tmp_path / "folder")).setup()


def test_a_dataset_name_is_read_from_the_cache_offline_with_its_columns_mapped(tmp_path, tokenizer, offline_cache):
    source = {"path": HUB_NAME, "columns": COLUMNS}
    dm = SFTDataModule(tokenizer, train_files=[source], val_files=[source])  # no split: train, then test
    dm.setup("fit")
    train, val = dm.train_and_val_records()
    assert [r.where for r in train] == [f"{HUB_NAME}[train]:{i}" for i in range(4)]
    assert [r.where for r in val] == [f"{HUB_NAME}[test]:{i}" for i in range(2)]
    assert train[1].row == {"id": 1, **as_lit_ft_row(hub_row(1))}  # the mapped columns no longer under their names
    assert dm.task_names == ["classify", "flag"]
    jsonl = write_jsonl(tmp_path / "same.jsonl", [as_lit_ft_row(hub_row(i)) for i in range(4)])
    reference = SFTDataModule(tokenizer, jsonl)
    reference.setup("fit")
    assert tokens(dm.train_examples) == tokens(reference.train_examples)
    assert (dm.stats["train"].examples, dm.stats["val"].examples) == (4, 2)


def test_subset_and_split_expressions_are_datasets_own(offline_cache):
    cache_dataset(offline_cache, HUB_NAME, {"train": [hub_row(9)]}, subset="small")
    small, _ = RowSource.of({"path": HUB_NAME, "name": "small", "columns": COLUMNS}).read()
    assert [(r.where, r.row["messages"][0]["content"]) for r in small] == [
        (f"{HUB_NAME}(small)[train]:0", "Classify clause 9.")
    ]
    sliced, _ = RowSource.of({"path": HUB_NAME, "name": "default", "split": "train[2:]"}).read()
    assert [(r.where, r.row["id"]) for r in sliced] == [
        (f"{HUB_NAME}(default)[train[2:]]:0", 2),
        (f"{HUB_NAME}(default)[train[2:]]:1", 3),
    ]
    with pytest.raises(DataError, match=r"Couldn't find cache for my-org/legal-chats for config 'large'"):
        RowSource.of({"path": HUB_NAME, "name": "large"}).read()


def test_a_name_not_cached_fails_at_once_offline_saying_how_to_get_it(offline_cache):
    with pytest.raises(DataError) as error:
        RowSource.of({"path": "my-org/absent", "name": "chat"}).read()
    message = str(error.value)
    assert message.startswith("my-org/absent(chat): not a local file or folder, and not in the Hugging Face datasets")
    assert str(offline_cache) in message and "HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set" in message
    assert """python -c "import datasets; datasets.load_dataset('my-org/absent', 'chat')\"""" in message
    assert "'my-org___absent'" in message


def test_without_network_a_name_goes_straight_to_the_cache(offline_cache, monkeypatch):
    """No offline variable, but the hub's host name does not resolve: the hub is never asked."""
    import datasets
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("lit_ft.data.sources.hub_unreachable", lambda: True)
    for method in ("hf_hub_download", "dataset_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, method, no_network)
    rows, _ = RowSource.of(HUB_NAME).read()  # a bare name is a source too
    assert len(rows) == 4 and rows[0].where == f"{HUB_NAME}[train]:0"
    with pytest.raises(DataError, match="the Hugging Face hub cannot be reached, so it cannot be downloaded"):
        RowSource.of("my-org/absent").read()
    assert datasets.config.HF_HUB_OFFLINE is False  # set for the load only


def test_a_mapping_to_a_missing_column_names_the_source_the_column_and_the_columns(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"question": "q", "answer": "a"}]).to_parquet(str(tmp_path / "qa.parquet"))
    source = RowSource.of(
        {"path": str(tmp_path / "qa.parquet"), "columns": {"prompt": "question", "completion": "reply"}}
    )
    with pytest.raises(DataError) as error:
        source.read()
    assert error.value.where == f"{tmp_path / 'qa.parquet'}:0" and error.value.field == "columns.completion"
    assert str(error.value).endswith(
        "no column 'reply' to read 'completion' from (columns={'prompt': 'question', 'completion': 'reply'}); "
        "the columns are 'answer', 'question'"
    )
    good = RowSource.of(
        {"path": str(tmp_path / "qa.parquet"), "columns": {"prompt": "question", "completion": "answer"}}
    )
    assert good.read()[0][0].row == {"prompt": "q", "completion": "a"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"path": "x.jsonl", "nmae": "subset"}, r"unknown key\(s\) \['nmae'\] in the data source"),
        ({"name": "subset"}, "a data source needs a path"),
        ({"path": [], "task_types": ["flag"]}, "a data source needs a path, got an empty list"),
        ({"path": "x.jsonl", "task_types": []}, "task_types must be a non-empty list"),
        ({"path": "x.jsonl", "columns": {"messages": 3}}, "columns maps lit-ft fields to column names"),
        (3, "a data source is a path or a mapping"),
    ],
)
def test_a_malformed_source_is_refused_when_the_data_module_is_built(value, message, tokenizer):
    with pytest.raises(ValueError, match=message):
        SFTDataModule(tokenizer, train_files=[value])


def test_a_missing_local_file_is_not_taken_for_a_dataset_name(tmp_path):
    for path in (str(tmp_path / "missing.jsonl"), "data/legal/trian.jsonl", "missing.parquet"):
        with pytest.raises(FileNotFoundError, match=f"Data file '{path}' does not exist"):
            RowSource.of(path).read()


def test_task_types_keep_only_those_rows_and_count_the_others(tmp_path, tokenizer):
    kinds = ["classify", "flag", "revise", "classify", "revise", "classify"]
    train = write_jsonl(tmp_path / "train.jsonl", [chat(f"q{i}", f"a{i}", kind) for i, kind in enumerate(kinds)])
    val = write_jsonl(tmp_path / "val.jsonl", [chat("v", "w", kind) for kind in ("summarize", "flag", "revise")])
    keep = ["classify", "flag"]
    dm = SFTDataModule(tokenizer, [{"path": str(train), "task_types": keep}], [{"path": str(val), "task_types": keep}])
    dm.setup("fit")
    train_stats, val_stats = dm.stats["train"], dm.stats["val"]
    assert (train_stats.rows, dict(train_stats.examples_per_task)) == (4, {"classify": 3, "flag": 1})
    assert train_stats.to_dict()["filtered_rows"] == {"revise": 2}
    assert (val_stats.rows, val_stats.to_dict()["filtered_rows"]) == (1, {"revise": 1, "summarize": 1})
    assert dm.task_names == ["classify", "flag"]
    assert train_stats.describe("train").endswith("; 2 more rows left out by task_types (2 revise)")
    assert [r.where for r in dm.train_and_val_records()[0]] == [f"{train}:{n}" for n in (1, 2, 4, 6)]
    with pytest.raises(
        ValueError,
        match=r"No training examples left .*6 more rows left out by task_types \(3 classify, 1 flag, 2 revise\)",
    ):
        SFTDataModule(tokenizer, [{"path": str(train), "task_types": ["summarize"]}]).setup("fit")


def test_a_list_of_paths_in_a_mapping_is_one_source_per_path_with_its_settings(tmp_path, tokenizer):
    """``data.train_files.path=[a,b]`` on a config whose source is a mapping (``data=rl_legal``'s, with task_types):
    both files are read, each filtered the same way."""
    first = write_jsonl(tmp_path / "a.jsonl", [chat("q0", "a0", "flag"), chat("q1", "a1", "revise")])
    second = write_jsonl(tmp_path / "b.jsonl", [chat("q2", "a2", "classify"), chat("q3", "a3", "flag")])
    cfg = compose_config(["experiment=rl_legal", f"data.train_files.path=[{first},{second}]"])
    sources = source_list(cfg.data.train_files)
    assert [(s.path, s.task_types) for s in sources] == [
        (str(first), ("classify", "flag")),
        (str(second), ("classify", "flag")),
    ]
    dm = SFTDataModule(tokenizer, cfg.data.train_files, str(second))
    dm.setup("fit")
    assert [r.where for r in dm.train_and_val_records()[0]] == [f"{first}:1", f"{second}:1", f"{second}:2"]
    assert dm.stats["train"].to_dict()["filtered_rows"] == {"revise": 1}


def test_a_mixture_takes_sources_in_the_same_spelling(tmp_path, tokenizer, offline_cache):
    from datasets import Dataset

    local = [chat(f"local {i}", "x", "a" if i < 2 else "b") for i in range(5)]
    Dataset.from_list(local).save_to_disk(str(tmp_path / "local"))
    dm = SFTDataModule(
        tokenizer,
        mixture=[
            {"name": "local", "files": [{"path": str(tmp_path / "local"), "task_types": ["a"]}], "weight": 3},
            {"files": {"path": HUB_NAME, "columns": COLUMNS}, "val_files": {"path": HUB_NAME, "columns": COLUMNS}},
        ],
        train_samples=8,
    )
    dm.setup("fit")
    stats = dm.stats["train"]
    assert list(stats.sources) == ["local", "legal-chats"]  # a source unnamed is called by its dataset's name
    drawn = mixture_counts([3, 1], 8)
    assert [(s["examples"], s["drawn"]) for s in stats.sources.values()] == [(2, drawn[0]), (4, drawn[1])]
    assert stats.to_dict()["filtered_rows"] == {"b": 3}
    assert [r.where for r in dm.val_records()] == [f"{HUB_NAME}[test]:0", f"{HUB_NAME}[test]:1"]


def test_train_py_trains_on_a_cached_dataset_name(tmp_path, offline_cache):
    source = f"{{path: {HUB_NAME}, columns: {{messages: conversation, task_type: category}}}}"
    run_entry_point(
        [
            "experiment=sft_legal",
            "debug=tiny",
            f"data.train_files=[{source}]",
            "data.val_files=${data.train_files}",  # the same source: its test split validates
            "data.batch_size=2",
            "callbacks.forgetting.max_questions=4",
            "callbacks.forgetting.max_passages=1",
            f"paths.log_dir={tmp_path / 'logs'}",
        ]
    )
    run = tmp_path / "logs" / "debug_tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["data"]["train"]["examples"], summary["data"]["val"]["examples"]) == (4, 2)
    assert summary["optimizer_steps"] == 2  # one epoch of 4 examples in batches of 2
    assert summary["train_tokens"] == summary["data"]["train"]["loss_tokens"]
    assert f"`{HUB_NAME}`" in (run / "model" / "README.md").read_text()  # the model card names the dataset

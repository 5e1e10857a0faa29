"""Long documents for continual pre-training (``data.long_documents=blocks``): concatenated with EOS between them and
cut into ``max_length`` blocks overlapping by ``block_stride``, the overlap without loss; counted in the stats and the
run's summary.json."""

from __future__ import annotations

import json

import pytest

from lit_ft.data import SFTDataModule
from lit_ft.data.batch import IGNORE_INDEX, loss_tokens
from lit_ft.data.blocks import make_blocks
from lit_ft.data.stats import SplitStats
from lit_ft.data.tokenize import tokenize_text
from lit_ft.data.truncation import truncate
from tests.conftest import REPO, write_jsonl
from tests.support.helpers import run_entry_point
from tests.test_summary import printed

X = IGNORE_INDEX
EOS = 2
# two raw-text documents of task type "a" as tokenize_text makes them: every token carries loss, EOS last
A = {"input_ids": [10, 11, 12, 13, 14, EOS], "labels": [10, 11, 12, 13, 14, EOS], "task_type": "a"}
B = {"input_ids": [20, 21, 22, 23, EOS], "labels": [20, 21, 22, 23, EOS], "task_type": "a"}
C = {"input_ids": [30, 31, 32, 33, 34, EOS], "labels": [30, 31, 32, 33, 34, EOS], "task_type": "c"}


def ids_and_labels(blocks):
    return [(block["input_ids"], block["labels"]) for block in blocks]


def test_documents_are_concatenated_with_eos_between_and_cut_into_blocks():
    # stream: 10 11 12 13 14 EOS 20 21 22 23 EOS (11 tokens) in blocks of 4; the last block is what is left
    assert ids_and_labels(make_blocks([A, B], 4)) == [
        ([10, 11, 12, 13], [10, 11, 12, 13]),
        ([14, EOS, 20, 21], [14, EOS, 20, 21]),  # A's EOS between the two documents, inside a block
        ([22, 23, EOS], [22, 23, EOS]),
    ]


def test_with_a_stride_the_overlap_is_context_without_loss():
    # stride 1: a block every 3 tokens, repeating the previous block's last token as context (label -100)
    assert ids_and_labels(make_blocks([A, B], 4, stride=1)) == [
        ([10, 11, 12, 13], [10, 11, 12, 13]),
        ([13, 14, EOS, 20], [X, 14, EOS, 20]),
        ([20, 21, 22, 23], [X, 21, 22, 23]),
        ([23, EOS], [X, EOS]),  # one new token left: EOS, with the last token before it as context
    ]
    # stride 2: a block every 2 tokens; no block is made of overlap alone (the stream ends with [22, 23, EOS])
    assert ids_and_labels(make_blocks([A, B], 4, stride=2)) == [
        ([10, 11, 12, 13], [10, 11, 12, 13]),
        ([12, 13, 14, EOS], [X, X, 14, EOS]),
        ([14, EOS, 20, 21], [X, X, 20, 21]),
        ([20, 21, 22, 23], [X, X, 22, 23]),
        ([22, 23, EOS], [X, X, EOS]),
    ]


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_with_a_stride_every_token_after_the_first_is_a_target_once(stride):
    # a target is a labelled token with a token before it in its block (the loss shifts: position 0 predicts none)
    targets = [
        token
        for block in make_blocks([A, B], 4, stride)
        for token, label in zip(block["input_ids"][1:], block["labels"][1:])
        if label != X
    ]
    assert targets == (A["input_ids"] + B["input_ids"])[1:]


def test_only_documents_of_one_task_type_share_a_block():
    blocks = make_blocks([A, C, B], 4)  # task types a, c, a: A and B concatenate, C has a stream of its own
    assert [(block["task_type"], block["input_ids"]) for block in blocks] == [
        ("a", [10, 11, 12, 13]),
        ("a", [14, EOS, 20, 21]),
        ("a", [22, 23, EOS]),
        ("c", [30, 31, 32, 33]),
        ("c", [34, EOS]),
    ]


def test_a_stride_must_leave_each_block_a_new_token():
    with pytest.raises(ValueError, match="block_stride=4 must be at least 0 and less than max_length=4"):
        make_blocks([A], 4, stride=4)


def test_split_stats_count_blocks_as_rows_and_examples():
    stats = SplitStats()
    stats.count(truncate([{"input_ids": [1, 2, 3], "labels": [X, 2, 3]}], 4, "right"), "a")  # a row that fits
    stats.count_blocks(2, make_blocks([A, B], 4, stride=1))  # 2 documents -> 4 blocks (above): 14 tokens, 11 labelled
    data = stats.to_dict()
    assert (data["rows"], data["examples"], data["documents_split"], data["blocks"]) == (3, 5, 2, 4)
    assert (data["tokens"], data["loss_tokens"], data["examples_per_task"]) == (3 + 14, 2 + 11, {"a": 5})
    assert data["truncated_examples"] == 0
    assert "2 documents longer than max_length cut into 4 blocks" in stats.describe("train")


def test_the_datamodule_cuts_long_text_rows_and_keeps_the_others(tmp_path, tokenizer):
    long_texts = [" ".join(f"clause {i} of document {d}." for i in range(12)) for d in (1, 2)]
    rows = [
        {"text": long_texts[0], "task_type": "prose"},
        {"prompt": "Short question?", "completion": "Short answer.", "task_type": "qa"},
        {"text": "A short passage.", "task_type": "prose"},
        {"prompt": "Long question?", "completion": long_texts[0], "task_type": "qa"},  # not raw text: truncated
        {"text": long_texts[1], "task_type": "prose"},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    blocks = SFTDataModule(tokenizer, path, max_length=32, long_documents="blocks", block_stride=8)
    blocks.setup()
    truncating = SFTDataModule(tokenizer, path, max_length=32)
    truncating.setup()

    documents = [tokenize_text(tokenizer, "", text) for text in long_texts]
    assert all(len(document["input_ids"]) > 32 for document in documents)
    stream = documents[0]["input_ids"] + documents[1]["input_ids"]
    assert stream[len(documents[0]["input_ids"]) - 1] == tokenizer.eos_token_id == stream[-1]  # EOS ends each
    # the other rows are the truncating module's examples, in order; the blocks follow them
    assert blocks.train_examples[:3] == truncating.train_examples[1:4]
    cut = blocks.train_examples[3:]
    assert all(
        block["task_type"] == "prose" and block["task_ids"] == [block["task_ids"][0]] * len(block["input_ids"])
        for block in cut
    )
    # blocks of 32 every 24 tokens: the first block, then each block's 24 new tokens, rebuild the stream
    assert [len(block["input_ids"]) for block in cut[:-1]] == [32] * (len(cut) - 1)
    assert cut[0]["input_ids"] + [t for block in cut[1:] for t in block["input_ids"][8:]] == stream
    assert cut[0]["labels"] == cut[0]["input_ids"]
    assert all(block["labels"] == [X] * 8 + block["input_ids"][8:] for block in cut[1:])
    stats = blocks.stats["train"]
    assert (stats.rows, stats.documents_split, stats.blocks, stats.examples) == (5, 2, len(cut), 3 + len(cut))
    assert stats.loss_tokens == sum(int(loss_tokens(e["labels"])) for e in blocks.train_examples)
    assert stats.truncated_examples == 1 and truncating.stats["train"].truncated_examples == 3


def test_the_shipped_cpt_data_gives_the_same_examples_with_blocks(tokenizer):
    # conf/data/legal_cpt.yaml turns blocks on at max_length 512: no passage is longer, so nothing changes
    files = {"train_files": REPO / "data/legal_cpt/train.jsonl", "val_files": REPO / "data/legal_cpt/val.jsonl"}
    modules = {
        (mode, length): SFTDataModule(tokenizer, **files, max_length=length, packing=True, long_documents=mode)
        for mode in ("truncate", "blocks")
        for length in (512, 128)
    }
    for module in modules.values():
        module.setup()
    same, cut = modules["blocks", 512], modules["blocks", 128]
    assert list(same.train_examples) == list(modules["truncate", 512].train_examples)
    assert list(same.val_examples) == list(modules["truncate", 512].val_examples)
    assert same.stats["train"].documents_split == same.stats["val"].documents_split == 0
    # the comparison can tell: at 128 tokens most passages are longer, and blocks change the examples
    assert cut.stats["train"].documents_split > 0 and list(cut.train_examples) != list(
        modules["truncate", 128].train_examples
    )


def test_a_cpt_run_reports_its_blocks_in_the_summary(tmp_path):
    run_entry_point(
        [
            "experiment=cpt_legal",
            "debug=tiny",
            "data.long_documents=blocks",
            "data.max_length=32",
            "data.block_stride=8",
            "callbacks=none",
            "export=false",
            "+trainer.enable_progress_bar=false",
            f"paths.log_dir={tmp_path}",
        ]
    )
    summary = json.loads((tmp_path / "debug_tiny" / "summary.json").read_text())
    data = summary["data"]
    # every passage is longer than 32 tokens. Train: 18 passages, 3,176 tokens with their EOS, a block of 32 every
    # 24 tokens while one has a new token: ceil((3176 - 8) / 24) = 132 blocks. Val: 2 passages, 321 tokens, 14.
    assert (data["train"]["documents_split"], data["train"]["blocks"], data["train"]["examples"]) == (18, 132, 132)
    assert (data["val"]["documents_split"], data["val"]["blocks"], data["val"]["truncated_examples"]) == (2, 14, 0)
    # 131 blocks of 32 and a last one of 3176 - 131 * 24 = 32 tokens; each after the first has 8 without loss
    assert (data["train"]["tokens"], data["train"]["loss_tokens"]) == (132 * 32, 132 * 32 - 131 * 8)
    trained_on = next(line for line in printed(summary) if line.startswith("trained on"))
    assert trained_on.endswith("(data: 4,224 tokens in 132 examples, 132 of them blocks cut from 18 long documents)")

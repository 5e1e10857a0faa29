"""Preference rows and batches: formats, errors with file/line/field, chat-template tokenisation, truncation."""

from __future__ import annotations

import pytest

from lit_ft.data import DataError, PreferenceDataModule, SFTDataModule, read_records
from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.preference_rows import parse_preference_row
from lit_ft.data.rows import ChatExample, TextExample
from tests.conftest import REPO, write_jsonl

PROMPT = [{"role": "system", "content": "Answer in house notation."}, {"role": "user", "content": "Classify: X."}]


def pair_row(chosen: str = "TYPE: payment", rejected: str = "It is about payment.", **extra) -> dict:
    return {
        "prompt": PROMPT,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


def parse(tmp_path, row):
    return parse_preference_row(next(iter(read_records(write_jsonl(tmp_path / "p.jsonl", [row])))))


def test_explicit_implicit_and_string_answers_give_the_same_pair(tmp_path):
    explicit = parse(tmp_path, pair_row(task_type="classify", margin=1))
    implicit = parse(
        tmp_path,
        {
            "chosen": [*PROMPT, {"role": "assistant", "content": "TYPE: payment"}],
            "rejected": [*PROMPT, {"role": "assistant", "content": "It is about payment."}],
            "task_type": "classify",
            "margin": 1,
        },
    )
    string_answers = parse(
        tmp_path,
        {
            "prompt": PROMPT,
            "chosen": "TYPE: payment",
            "rejected": "It is about payment.",
            "task_type": "classify",
            "margin": 1.0,
        },
    )
    assert explicit == implicit == string_answers
    assert isinstance(explicit.chosen, ChatExample) and explicit.chosen.trainable_turns == (2,)
    assert explicit.margin == 1.0 and explicit.task_type == "classify"


def test_implicit_prompt_is_the_longest_shared_prefix(tmp_path):
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    pair = parse(
        tmp_path,
        {
            "chosen": [*turns, {"role": "assistant", "content": "good"}],
            "rejected": [*turns, {"role": "assistant", "content": "bad"}],
        },
    )
    assert pair.chosen.messages[:3] == turns and pair.chosen.trainable_turns == (3,)  # earlier answers carry no loss
    assert pair.rejected.messages[3]["content"] == "bad" and pair.margin is None


def test_text_rows(tmp_path):
    pair = parse(tmp_path, {"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"})
    assert pair.chosen == TextExample("Q: 2+2?\nA:", " 4", "default")


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": PROMPT, "chosen": "a"}, "rejected", "missing"),
        (pair_row(rejected="TYPE: payment"), "rejected", "identical"),
        ({"chosen": "a", "rejected": "b"}, "prompt", "text answers need a prompt"),
        ({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}, "chosen", "text answer"),
        ({"prompt": PROMPT, "chosen": "a", "rejected": " "}, "rejected", "empty answer"),
        ({**pair_row(), "margin": "big"}, "margin", "number"),
        ({**pair_row(), "task_type": ""}, "task_type", "non-empty"),
        (
            {"prompt": PROMPT, "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
            "prompt+chosen[2].role",
            "expected a assistant turn",
        ),
        (
            {"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"},
            "prompt[0].role",
            "unknown role",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "rejected": [{"role": "user", "content": "q"}],
            },
            "rejected",
            "do not differ",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [pair_row(), row])
    with pytest.raises(DataError) as info:
        for record in read_records(path):
            parse_preference_row(record)
    assert info.value.where == f"{path}:2" and info.value.field == field and message in str(info.value)


def test_pairs_are_tokenised_exactly_as_sft_and_batched_chosen_then_rejected(tmp_path, tokenizer):
    rows = [
        pair_row(task_type="classify", margin=0.5),
        pair_row("FLAG: STANDARD", "Looks fine to me, probably.", task_type="flag"),
    ]
    dm = PreferenceDataModule(tokenizer, write_jsonl(tmp_path / "p.jsonl", rows), batch_size=2)
    dm.setup("fit")
    sft_rows = [{"messages": r["prompt"] + r[side]} for side in ("chosen", "rejected") for r in rows]
    sft = SFTDataModule(tokenizer, write_jsonl(tmp_path / "sft.jsonl", sft_rows))
    sft.setup("fit")
    batch = next(iter(dm.ordered_dataloader("train")))
    assert batch["input_ids"].shape[0] == 4
    for row in range(4):
        expected = sft.train_examples[row]
        n = len(expected["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == expected["input_ids"]
        assert batch["labels"][row, :n].tolist() == expected["labels"]
        assert batch["attention_mask"][row].sum() == n and (batch["labels"][row, n:] == IGNORE_INDEX).all()
    completions = [tokenizer.decode(batch["input_ids"][r][batch["labels"][r] != IGNORE_INDEX]) for r in range(4)]
    assert completions == [
        "TYPE: payment<|im_end|>",
        "FLAG: STANDARD<|im_end|>",
        "It is about payment.<|im_end|>",
        "Looks fine to me, probably.<|im_end|>",
    ]
    assert dm.task_names == ["classify", "flag"]
    assert (
        batch["task_ids"][:, 0].tolist() == [0, 1, 0, 1]
        and (batch["task_ids"][batch["attention_mask"] == 0] == -1).all()
    )
    assert batch["margin"].tolist() == [0.5, 0.0] and batch["example_index"].tolist() == [0, 1]


def test_truncation_policy_is_counted_per_pair(tmp_path, tokenizer):
    long_prompt = [{"role": "user", "content": "clause " * 80}]
    rows = [
        pair_row(),
        {"prompt": long_prompt, "chosen": "TYPE: payment", "rejected": "It is about payment."},
        {"prompt": PROMPT, "chosen": "TYPE: payment", "rejected": "words " * 80},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    left = PreferenceDataModule(tokenizer, path, max_length=64, truncation="left")
    left.setup("fit")
    stats = left.stats["train"]
    # left keeps the answers: pair 2 loses prompt tokens, pair 3's long rejected answer is cut at its start
    assert (stats.rows, stats.examples, stats.truncated_examples, stats.dropped_no_loss_tokens) == (3, 3, 2, 0)
    kept = left.train_examples[1]["chosen"]
    assert (
        len(kept["input_ids"]) == 64
        and tokenizer.decode([t for t in kept["labels"] if t != IGNORE_INDEX]) == "TYPE: payment<|im_end|>"
    )
    full = PreferenceDataModule(tokenizer, path, max_length=10_000)
    full.setup("fit")
    cut = [max(0, len(e[side]["input_ids"]) - 64) for e in full.train_examples for side in ("chosen", "rejected")]
    assert stats.truncated_tokens == sum(cut) > 0
    right = PreferenceDataModule(tokenizer, path, max_length=64, truncation="right")
    right.setup("fit")
    # right cuts the end: pair 2 loses its answers entirely (dropped, counted), pair 3 keeps part of its rejected answer
    assert (
        right.stats["train"].examples,
        right.stats["train"].dropped_no_loss_tokens,
        right.stats["train"].truncated_examples,
    ) == (2, 1, 1)
    drop = PreferenceDataModule(tokenizer, path, max_length=64, truncation="drop")
    drop.setup("fit")
    assert (drop.stats["train"].examples, drop.stats["train"].dropped_too_long) == (1, 2)


def test_shipped_preference_set_loads(tokenizer):
    dm = PreferenceDataModule(
        tokenizer, REPO / "data/preference/train.jsonl", REPO / "data/preference/val.jsonl", max_length=256
    )
    dm.setup("fit")
    assert (len(dm.train_examples), len(dm.val_examples)) == (280, 60)
    assert dm.task_names == ["classify", "flag", "revise", "summarize"]
    assert dm.stats["train"].truncated_examples == 0 and dm.stats["val"].truncated_examples == 0
    assert sum(e["margin"] is not None for e in dm.train_examples) == 28


def test_subsets_for_short_runs_are_seeded_and_counted(tmp_path, tokenizer):
    rows = [pair_row(f"TYPE: t{i}", f"maybe t{i}", task_type=f"k{i % 2}") for i in range(10)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    full = PreferenceDataModule(tokenizer, path)
    full.setup("fit")
    order = [tuple(e["chosen"]["input_ids"]) for e in full.train_examples]
    kept, drawn = [], []
    for seed in (0, 0, 1):
        dm = PreferenceDataModule(tokenizer, path, path, train_samples=4, max_val_rows=3, seed=seed)
        dm.setup("fit")
        kept.append([order.index(tuple(e["chosen"]["input_ids"])) for e in dm.val_examples])
        drawn.append([order.index(tuple(e["chosen"]["input_ids"])) for e in dm.train_examples])
        assert (dm.stats["val"].rows, dm.stats["val"].examples, dm.stats["val"].unused_rows) == (3, 3, 7)
        assert len(set(drawn[-1])) == 4 and [e["example_index"] for e in dm.train_examples] == [0, 1, 2, 3]
        source = next(iter(dm.stats["train"].sources.values()))
        assert (source["examples"], source["drawn"], source["loss_token_share"]) == (10, 4, 1.0)
    assert kept[0] == kept[1] != kept[2] and drawn[0] == drawn[1] != drawn[2]
    assert kept[0] == sorted(kept[0])  # the validation sample keeps file order


def test_pairs_are_grouped_by_their_longer_side(tmp_path, tokenizer):
    rows = [pair_row("TYPE: t" + " word" * (i * 7 % 23), "no", task_type="k") for i in range(16)]
    dm = PreferenceDataModule(tokenizer, write_jsonl(tmp_path / "p.jsonl", rows), val_ratio=0, batch_size=4)
    dm.group_by_length = True
    dm.setup("fit")
    examples = list(dm.train_examples)
    lengths = {e["example_index"]: len(e["chosen"]["input_ids"]) for e in examples}  # chosen is the longer side
    assert all(len(e["chosen"]["input_ids"]) > len(e["rejected"]["input_ids"]) for e in examples)
    assert dm.train_examples.lengths().tolist() == [lengths[e["example_index"]] for e in examples]
    batches = [[lengths[int(i)] for i in batch["example_index"]] for batch in dm.train_dataloader()]
    assert sorted(n for batch in batches for n in batch) == sorted(lengths.values())  # every pair once
    # grouped: a batch's lengths lie close together (a random order spreads them over most of the range)
    assert max(max(batch) - min(batch) for batch in batches) < (max(lengths.values()) - min(lengths.values())) / 2

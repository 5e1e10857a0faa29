"""The preference benchmark feeds TRL exactly the batches lit-ft trains on (benchmarks/bench_preference.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lit_ft.data import PairCollator

pytest.importorskip("trl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_preference import preference_data, trl_row  # noqa: E402
from common import Config  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference as DPOCollator  # noqa: E402
from trl.trainer.reward_trainer import DataCollatorForPreference as RewardCollator  # noqa: E402


@pytest.mark.parametrize("task", ["dpo", "reward"])
def test_trl_batches_equal_litft_batches(tokenizer, task):
    cfg = Config("trl", "lora", "matched", task=task, steps=2, warmup=1, batch_size=4)
    pairs = preference_data(cfg, tokenizer).train_examples
    # (warmup + steps) * batch_size, indexed in order
    assert [pair["example_index"] for pair in pairs] == list(range(12))
    trl_collator = (
        DPOCollator(tokenizer.pad_token_id, max_length=256) if task == "dpo" else RewardCollator(tokenizer.pad_token_id)
    )
    margins = 0.0
    for start in range(0, len(pairs), 4):
        batch = pairs[start : start + 4]
        ours = PairCollator(tokenizer.pad_token_id)(batch)
        theirs = trl_collator([trl_row(task, pair) for pair in batch])
        assert torch.equal(ours["input_ids"], theirs["input_ids"])
        assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
        if task == "dpo":
            # TRL's completion mask is lit-ft's loss mask, and every sequence ends on its last loss token (<|im_end|>)
            assert torch.equal(theirs["completion_mask"].bool(), ours["labels"] != -100)
            lengths = ours["attention_mask"].sum(1)
            last = ours["input_ids"].gather(1, (lengths - 1)[:, None]).squeeze(1)
            assert (last == tokenizer.convert_tokens_to_ids("<|im_end|>")).all()
        else:
            assert torch.equal(ours["margin"], theirs["margin"])
            margins += float(theirs["margin"].abs().sum())
    if task == "reward":
        assert margins > 0  # the seeded order holds rows with a margin, so the margin path is exercised

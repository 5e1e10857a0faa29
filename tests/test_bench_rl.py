"""The online-RL benchmark gives both tools the same work: the same prompt tokens, completions of the same length,
the same rollout tokens per step (benchmarks/bench_rl.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from lit_ft.models import tiny_llama
from lit_ft.modules.rl import last_answer_spans

pytest.importorskip("trl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_rl import distinct_token_reward, prompt_data, run_litft, run_trl, trl_prompts  # noqa: E402
from common import Config  # noqa: E402


def test_trl_renders_the_prompts_lit_ft_samples_from(tokenizer):
    # the real run's 48 prompts, multi-turn rows among them (their prompt ends before the last answer)
    cfg = Config("trl", "lora", "matched", task="rl", steps=10, warmup=2, batch_size=4)
    datamodule = prompt_data(cfg, tokenizer)
    prompts = trl_prompts(datamodule)  # raises when a rendering differs from lit-ft's prompt tokens
    assert len(prompts) == len(datamodule.train_examples) == 48
    assert any(sum(m["role"] == "assistant" for m in messages) for messages in prompts)  # a multi-turn prompt
    for messages, example in zip(prompts, datamodule.train_examples):
        assert messages[-1]["role"] == "user"
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        [(start, _)] = last_answer_spans(torch.tensor([example["labels"]]))
        assert list(rendered) == list(example["input_ids"][:start])


def test_reward_is_the_distinct_token_fraction():
    assert distinct_token_reward([[1, 2, 3, 4], [5, 5, 5, 5], []]) == [1.0, 0.25, 0.0]


def test_both_tools_generate_and_train_on_the_same_tokens(tokenizer, tmp_path):
    folder = tmp_path / "tiny"
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    extra = {"completion_length": 6, "group_size": 2}
    run = {"task": "rl", "model": str(folder), "steps": 1, "warmup": 1, "threads": 1, "batch_size": 2, "extra": extra}
    ours = run_litft(Config("lit-ft", "lora", "matched", **run))
    shared = run_litft(Config("lit-ft", "lora", "matched", attn="sdpa_varlen", **run))
    theirs = run_trl(Config("trl", "lora", "matched", **run))
    for result in (ours, shared, theirs):
        # every completion is exactly completion_length tokens: 2 prompts x 2 completions x 6 tokens per step
        assert result["metrics"]["rollout_tokens"] == [24, 24]
        assert math.isfinite(result["loss_first"]) and len(result["metrics"]["rollout_s"]) == 2
    assert ours["tokens_per_step"] == shared["tokens_per_step"] == theirs["tokens_per_step"]  # the same rollouts
    # lit-ft's two layouts sample the same completions (same seed) and compute the same loss on them
    assert shared["losses"] == pytest.approx(ours["losses"], abs=1e-5)

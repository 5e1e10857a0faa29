"""The flagship `python train.py experiment=lora_legal`, shortened, on the real embedded SmolLM2-135M-Instruct.

The same config the README's first command runs, with every callback of the experiment, cut to 4 optimizer steps on
32 training conversations, 16 validation conversations, 8 forgetting questions, 2 short samples and task scores on
the 16 validation prompts, 8 tokens per answer.
"""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from lit_ft.run import train
from tests.support.helpers import compose_config
from tests.test_task_scores import assert_logged

SHORT = [
    "experiment=lora_legal",
    "logger=csv",
    "callbacks.progress_bar=null",
    "data.train_samples=32",
    "data.max_val_rows=16",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "callbacks.forgetting.max_questions=8",
    "callbacks.forgetting.max_passages=1",
    "callbacks.generation_samples.prompts_file=null",
    "callbacks.generation_samples.val_prompts=2",
    "callbacks.generation_samples.max_new_tokens=8",
    "callbacks.task_scores.max_examples=16",
    "callbacks.task_scores.max_new_tokens=8",  # enough for "TYPE: <label>" and "FLAG: STANDARD"
]


@pytest.mark.slow
def test_shortened_lora_legal_learns_keeps_general_ability_and_exports(tmp_path):
    summary = train(compose_config(SHORT, output_dir=tmp_path))
    written = json.loads((tmp_path / "summary.json").read_text())

    assert written["trainable_params"] == 4_884_480  # r=16 on all 7 linear projections of 30 layers
    assert written["optimizer_steps"] == 4
    assert summary["val_loss_after"] < summary["val_loss_before"] - 0.3  # lr 5e-4: the legal format is learnt fast
    per_task = written["per_task"]
    assert set(per_task) <= {"classify", "flag", "revise", "summarize"} and per_task
    for task in per_task.values():
        assert task["val_loss_after"] < task["val_loss_before"]
    forgetting = written["forgetting"]
    assert forgetting["questions"] == 8 and forgetting["passages"] == 1
    assert forgetting["baseline"]["mcq_acc"] >= 0.5  # the pretrained model knows general facts
    assert abs(forgetting["delta"]["mcq_acc"]) <= 0.25
    assert written["early_stopping"]["best_step"] in (2, 4)
    assert len(written["samples"]) == 2 and all(sample["after"].strip() for sample in written["samples"])
    scores = written["task_scores"]
    assert scores["prompts"] == 16 and set(scores["before"]) == set(scores["after"]) == set(per_task)
    assert scores["before"]["classify"]["parse_rate"] == 0.0  # the base model never answers with a TYPE: line
    assert scores["before"]["revise"]["rouge_l"] > 0.1  # but its revisions share words with the reference
    for when in ("before", "after"):
        assert_logged(scores[when], written[f"val_{when}"])

    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as adapter:
        assert len(list(adapter.keys())) == 2 * 7 * 30  # lora_A and lora_B of 7 projections in 30 layers
    assert (tmp_path / "model" / "model.safetensors").is_file()  # merged
    assert (tmp_path / "checkpoints" / "last.ckpt").stat().st_size < 100e6  # trainable weights only (full: 1.6 GB)
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000

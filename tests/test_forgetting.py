"""General-ability scoring (multiple choice by log-likelihood, prose perplexity) and the forgetting callback."""

from __future__ import annotations

import copy
import logging
import math
import sys
import types

import pytest
import torch

from lit_ft.callbacks import ForgettingCheck
from lit_ft.data import SFTDataModule
from lit_ft.eval import GeneralAbility, continuation_logprobs, load_passages, load_questions, run_harness
from lit_ft.eval.harness import flatten_results
from lit_ft.models import LoRA
from lit_ft.modules import SFTModule
from tests.conftest import REPO

MCQ, PROSE = REPO / "data/general/mcq.jsonl", REPO / "data/general/prose.jsonl"


def naive_logprob(model, ids: list[int], scored_from: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= scored_from, one unpadded sequence at a time."""
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    return sum(float(logprobs[t - 1, ids[t]]) for t in range(scored_from, len(ids)))


def test_subsets_keep_the_subject_mix():
    questions = load_questions(MCQ, 10)
    assert len(questions) == 10 and len({q.subject for q in questions}) == 5
    assert len(load_passages(PROSE, 3)) == 3 and len(load_questions(MCQ)) == 193


def test_batched_scoring_equals_scoring_each_sequence_alone(tokenizer, tiny_model):
    model = tiny_model.eval()
    scorer = GeneralAbility(tokenizer, load_questions(MCQ, 6), load_passages(PROSE, 1), max_batch_tokens=150)
    items = scorer.mcq + scorer.prose
    # several batches, each context's KV cache shared by its continuations
    batched = continuation_logprobs(model, items, scorer.pad_token_id, max_batch_tokens=150)
    correct, nll, tokens = 0, 0.0, 0
    for index, (item, scores) in enumerate(zip(items, batched)):
        alone = [naive_logprob(model, item.context + c, len(item.context)) for c in item.continuations]
        assert scores.tolist() == pytest.approx(alone, rel=1e-4, abs=1e-3)
        if index < len(scorer.mcq):
            correct += max(range(len(alone)), key=alone.__getitem__) == scorer.questions[index].answer
        else:
            nll, tokens = nll - alone[0], tokens + len(item.continuations[0])
    scores = scorer.score(model)
    assert scores["mcq_acc"] == correct / 6
    assert scores["prose_ppl"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    # the context is the question, the continuation " " + choice
    first = scorer.mcq[0]
    assert tokenizer.decode(first.context) == f"Question: {scorer.questions[0].question}\nAnswer:"
    assert tokenizer.decode(first.continuations[0]) == f" {scorer.questions[0].choices[0]}"


def test_ranks_run_the_same_forwards_and_their_sums_are_the_one_process_sums(tokenizer, tiny_model):
    model = tiny_model.eval()
    # 5 questions in 3 batches and 1 passage: dealt to 2 ranks as 2 + 1 and 1 + 0 batches
    scorer = GeneralAbility(tokenizer, load_questions(MCQ, 5), load_passages(PROSE, 1), max_batch_tokens=64)
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    one = scorer.sums(model)
    assert len(forwards) == 2 * (3 + 1)  # two forwards a batch
    per_rank = []
    for rank in range(2):
        forwards.clear()
        per_rank.append(scorer.sums(model, rank, 2))
        assert len(forwards) == 2 * (2 + 1)  # rank 1 repeats a batch of each part, and discards it
    # each item is scored in the same batch as in one process: the same numbers
    torch.testing.assert_close(per_rank[0] + per_rank[1], one, rtol=1e-12, atol=0)
    assert per_rank[1][-1] == 0 and per_rank[0][-1] == one[-1]  # the passage is rank 0's


def test_lora_baseline_scores_the_base_model_with_the_adapter_disabled(tokenizer, tiny_model, tiny_trainer):
    base = copy.deepcopy(tiny_model).eval()
    adapted = LoRA(r=4, alpha=8, dropout=0.0)(tiny_model)
    with torch.no_grad():  # adapters that changed the model, as training would
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    module = SFTModule(model=lambda: adapted)
    module.configure_model()
    callback = ForgettingCheck(mcq_file=str(MCQ), prose_file=str(PROSE), max_questions=5, max_passages=1)
    callback.scorer = GeneralAbility(tokenizer, callback.questions, callback.passages)
    trainer = tiny_trainer()
    expected_base = callback.scorer.score(base)
    assert callback.score(trainer, module, base=True) == expected_base
    assert callback.score(trainer, module)["prose_ppl"] != pytest.approx(expected_base["prose_ppl"])
    assert module.model.training  # put back in train mode after scoring


def test_thresholds_in_words():
    callback = ForgettingCheck(mcq_file=str(MCQ), max_questions=4, max_acc_drop=0.02, max_ppl_increase=0.1)
    callback.baseline = {"mcq_acc": 0.60, "prose_ppl": 10.0}
    assert callback.problems({"mcq_acc": 0.59, "prose_ppl": 10.9}) == []
    problems = callback.problems({"mcq_acc": 0.55, "prose_ppl": 11.5})
    assert problems[0].startswith("mcq_acc fell by 5.0 points") and problems[1].startswith("prose_ppl rose by 15.0%")
    assert callback.deltas({"mcq_acc": 0.55, "prose_ppl": 11.5}) == pytest.approx({"mcq_acc": -0.05, "prose_ppl": 1.5})


class CountingScorer(GeneralAbility):
    calls = 0

    def sums(self, *args, **kwargs):
        CountingScorer.calls += 1
        return super().sums(*args, **kwargs)


def test_check_logs_deltas_and_stops_training_when_a_threshold_is_crossed(
    tokenizer, tiny_model, arithmetic_files, tiny_trainer
):
    train_file, val_file = arithmetic_files
    data = SFTDataModule(tokenizer, train_file, val_file, max_length=64, batch_size=8)
    module = SFTModule(model=lambda: tiny_model, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-2))
    # max_ppl_increase=-0.5 asks prose perplexity to halve at once: every check crosses it
    callback = ForgettingCheck(
        mcq_file=str(MCQ), prose_file=str(PROSE), max_questions=4, max_passages=1, max_ppl_increase=-0.5
    )
    callback.on_exceed = "stop"
    callback.scorer = CountingScorer(tokenizer, callback.questions, callback.passages)
    trainer = tiny_trainer(
        max_steps=5, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[callback]
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2  # stopped by the first check
    assert [check["stage"] for check in callback.checks] == ["baseline", "validation", "final"]
    assert CountingScorer.calls == 2  # the final weights are those of the check: scored once
    metrics, baseline, final = trainer.callback_metrics, callback.baseline, callback.final
    assert metrics["forgetting/prose_ppl"].item() == pytest.approx(final["prose_ppl"])
    assert metrics["forgetting/prose_ppl_delta"].item() == pytest.approx(final["prose_ppl"] - baseline["prose_ppl"])
    assert set(final) >= {"mcq_acc", "mcq_acc_norm", "prose_ppl"} and final["prose_ppl"] != baseline["prose_ppl"]
    summary = callback.summary()["forgetting"]
    assert summary["delta"]["prose_ppl"] == pytest.approx(final["prose_ppl"] - baseline["prose_ppl"])
    assert summary["exceeded"][0]["step"] == 2 and "prose_ppl rose" in summary["exceeded"][0]["problems"][0]


def test_lm_eval_tasks_fall_back_to_the_shipped_set_without_lm_eval(monkeypatch, caplog):
    monkeypatch.setattr("lit_ft.callbacks.forgetting.harness_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        callback = ForgettingCheck(mcq_file=str(MCQ), max_questions=4, lm_eval_tasks=["arc_easy"])
    assert callback.lm_eval_tasks == [] and "lm_eval is not installed" in caplog.text
    assert len(callback.questions) == 4


def test_lm_eval_results_are_flattened_to_scalars(monkeypatch):
    results = {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.6, "acc_stderr,none": 0.01, "acc_norm,none": 0.55},
        "hellaswag": {"acc,none": 0.3, "samples": 10},
    }
    expected = {"arc_easy_acc": 0.6, "arc_easy_acc_norm": 0.55, "hellaswag_acc": 0.3, "hellaswag_samples": 10.0}
    assert flatten_results(results) == expected
    # the call into lm_eval (not installed here): a stand-in with its documented API records how it is called
    calls = {}
    harness = types.ModuleType("lm_eval")
    harness.simple_evaluate = lambda model, tasks, limit: calls.update(model=model, tasks=tasks) or {"results": results}
    huggingface = types.ModuleType("lm_eval.models.huggingface")
    huggingface.HFLM = lambda pretrained, tokenizer, batch_size: ("HFLM", pretrained, tokenizer)
    monkeypatch.setitem(sys.modules, "lm_eval", harness)
    monkeypatch.setitem(sys.modules, "lm_eval.models", types.ModuleType("lm_eval.models"))
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", huggingface)
    assert run_harness("model", "tokenizer", ("arc_easy",), limit=5) == expected
    assert calls == {"model": ("HFLM", "model", "tokenizer"), "tasks": ["arc_easy"]}


def test_a_fit_with_no_step_to_take_still_reports_a_baseline(tokenizer, tiny_model, arithmetic_files, tiny_trainer):
    # max_steps=0 (or a resumed run already at max_steps): Lightning never starts training, but the fit ends
    train_file, val_file = arithmetic_files
    data = SFTDataModule(tokenizer, train_file, val_file, max_length=64, batch_size=8)
    callback = ForgettingCheck(mcq_file=str(MCQ), prose_file=str(PROSE), max_questions=4, max_passages=1)
    trainer = tiny_trainer(max_steps=0, callbacks=[callback])
    trainer.fit(SFTModule(model=lambda: tiny_model), datamodule=data)
    summary = callback.summary()["forgetting"]
    assert [c["stage"] for c in summary["checks"]] == ["baseline", "final"]
    assert summary["delta"]["prose_ppl"] == 0.0 and summary["exceeded"] == []  # the same weights

"""Online RL (module=rl): reward sources against hand-computed values and their refusals, the module's own checks,
and `python train.py experiment=rl_legal debug=tiny` end to end (rewards and KL logged, a model exported)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lit_ft.eval import LabelMetrics, TextOverlap
from lit_ft.eval.rewards import FormatReward, RewardModelReward, TaskMetricReward, WeightedSum
from lit_ft.models.tiny import tiny_llama
from lit_ft.modules.rl import RLModule, Rollouts, checked_rewards, groups_with_answers, last_answer_spans
from tests.support.helpers import run_entry_point

METRICS = {
    "classify": LabelMetrics(pattern=r"TYPE:\s*([a-z_]+)"),
    "flag": LabelMetrics(pattern=r"FLAG:\s*(NON-STANDARD|STANDARD)", positive="NON-STANDARD"),
    "summarize": TextOverlap(["rouge_l"]),
}


def rollouts(completions, references, task_types, tokenizer=None, prompt_ids=None, completion_ids=None) -> Rollouts:
    ids = [[1]] * len(completions)
    return Rollouts(prompt_ids or ids, completion_ids or ids, completions, references, task_types, tokenizer,
                    torch.device("cpu"))  # fmt: skip


LABELLED = rollouts(
    ["TYPE: payment", "type: indemnity", "I think it is payment", "FLAG: NON-STANDARD - uncapped", "a b d"],
    ["TYPE: payment", "TYPE: payment", "TYPE: payment", "FLAG: STANDARD", "a b c"],
    ["classify", "classify", "classify", "flag", "summarize"],
)


def test_task_metric_reward_is_label_match_or_the_text_score():
    # label match 1, 0, 0 (unparsed), 0 (wrong flag); ROUGE-L of "a b d" vs "a b c": LCS 2, P = R = 2/3, F = 2/3
    rewards = TaskMetricReward(METRICS)(LABELLED)
    torch.testing.assert_close(rewards, torch.tensor([1.0, 0.0, 0.0, 0.0, 2 / 3]))


def test_format_and_weighted_sum_rewards():
    labels_only = rollouts(LABELLED.completions[:4], LABELLED.references[:4], LABELLED.task_types[:4])
    torch.testing.assert_close(FormatReward(METRICS)(labels_only), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    both = WeightedSum(
        {"task": TaskMetricReward(METRICS), "format": FormatReward(METRICS)}, {"task": 1.0, "format": 0.2}
    )
    torch.testing.assert_close(both(labels_only), torch.tensor([1.2, 0.2, 0.0, 0.2]))
    with pytest.raises(ValueError, match="no label parser"):
        FormatReward(METRICS)(LABELLED)  # summarize has a text metric, nothing to parse
    with pytest.raises(ValueError, match="must name exactly the sources"):
        WeightedSum({"task": TaskMetricReward(METRICS)}, {"task": 1.0, "format": 0.2})


def test_label_weights_weigh_each_reward_by_its_reference_label():
    # flag references NON-STANDARD (weight 1.5) and STANDARD (0.75); classify has no weights (1.0); a wrong answer
    # stays 0 whatever its weight. Labels are matched as the parser normalises them ("non-standard").
    weighted = TaskMetricReward(METRICS, label_weights={"flag": {"NON-STANDARD": 1.5, " standard ": 0.75}})
    batch = rollouts(
        ["FLAG: NON-STANDARD - cap", "FLAG: STANDARD", "FLAG: STANDARD", "FLAG: NON-STANDARD", "TYPE: payment"],
        [
            "FLAG: NON-STANDARD - uncapped",
            "FLAG: NON-STANDARD - x",
            "FLAG: STANDARD",
            "FLAG: STANDARD",
            "TYPE: payment",
        ],
        ["flag", "flag", "flag", "flag", "classify"],
    )
    torch.testing.assert_close(weighted(batch), torch.tensor([1.5, 0.0, 0.75, 0.0, 1.0]))
    assert weighted.scales_prompts and not TaskMetricReward(METRICS).scales_prompts
    both = WeightedSum({"task": weighted, "format": FormatReward(METRICS)}, {"task": 1.0, "format": 0.2})
    assert both.scales_prompts
    with pytest.raises(ValueError, match="'summarize', whose metric parses no labels"):
        TaskMetricReward(METRICS, label_weights={"summarize": {"a": 2.0}})
    with pytest.raises(ValueError, match=r"must be > 0, got \{'STANDARD': 0.0\}"):
        TaskMetricReward(METRICS, label_weights={"flag": {"STANDARD": 0.0}})


def test_bad_rewards_and_rows_are_refused():
    with pytest.raises(ValueError, match=r"non-finite rewards for completions \[1\]"):
        WeightedSum({"bad": lambda r: torch.tensor([1.0, math.nan])}, {"bad": 1.0})(
            rollouts(["a", "b"], ["a", "b"], ["x", "x"])
        )
    with pytest.raises(ValueError, match=r"shape \(1, 2\), expected \(2,\)"):
        checked_rewards(torch.zeros(1, 2), 2, "source")
    with pytest.raises(ValueError, match="no reference answer"):
        TaskMetricReward(METRICS)(rollouts(["TYPE: payment"], [""], ["classify"]))
    with pytest.raises(ValueError, match="no task metric for task type 'other'"):
        TaskMetricReward(METRICS)(rollouts(["x"], ["y"], ["other"]))


def test_module_refuses_a_group_of_one_and_a_missing_adapter():
    with pytest.raises(ValueError, match="needs at least 2"):
        RLModule(model=lambda: None, reward=lambda r: None, loss_type="rloo", group_size=1)
    with pytest.raises(ValueError, match="there is none: add peft=lora"):
        RLModule(model=lambda: None, reward=lambda r: None, reference="adapter")


def test_module_refuses_reference_answers_that_leave_no_sample_and_a_clip_range_upside_down():
    with pytest.raises(ValueError, match="reference_answers=2 of a group of 2"):
        RLModule(model=lambda: None, reward=lambda r: None, reference="copy", group_size=2, reference_answers=2)
    with pytest.raises(ValueError, match="reference_answers=-1"):
        RLModule(model=lambda: None, reward=lambda r: None, reference="copy", reference_answers=-1)

    with pytest.raises(ValueError, match="epsilon_high >= epsilon"):
        RLModule(model=lambda: None, reward=lambda r: None, reference="copy", epsilon=0.2, epsilon_high=0.1)


def test_groups_with_answers_end_each_prompts_samples_with_its_reference_answer():
    samples = [[1], [2], [3], [4]]  # 2 prompts x 2 samples
    assert groups_with_answers(samples, [[8, 0], [9, 0]], sampled=2, copies=1) == [[1], [2], [8, 0], [3], [4], [9, 0]]


def test_reference_answers_join_each_group_and_are_scored_and_trained_like_samples(tmp_path):
    # G=3 with one reference answer: the reward source sees 2 samples then the row's reference answer per prompt,
    # token for token what the row trains on (content and end-of-turn token)
    out, seen = tmp_path / "run", tmp_path / "seen.jsonl"
    run_entry_point([
        "experiment=rl_legal", "debug=tiny", f"paths.output_dir={out}", "logger=csv", "trainer.log_every_n_steps=1",
        "~reward", f"module.reward={{_target_:tests.support.rl.RecordingReward,path:'{seen}'}}",
        "module.group_size=3", "module.reference_answers=1", "module.max_new_tokens=6", "trainer.max_steps=1",
        "trainer.limit_val_batches=0", "callbacks=[default]", "data.max_length=1024",  # no row cut before its end
    ])  # fmt: skip
    [call] = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(call["completion_ids"]) == 3 * 4  # data.batch_size 4 prompts
    for group in range(4):
        *samples, answer = range(3 * group, 3 * group + 3)
        assert call["references"][answer].startswith(("TYPE:", "FLAG:"))
        assert call["completions"][answer] == call["references"][answer]
        assert call["completion_ids"][answer][-1] == call["eos_token_id"]
        assert all(len(call["completion_ids"][i]) <= 6 for i in samples)  # sampled, at most max_new_tokens
    [metrics_file] = out.glob("**/metrics.csv")
    [row] = [row for row in csv.DictReader(metrics_file.open()) if row["train/reward"]]
    # the loss covers the answers' tokens as it does the samples'
    lengths = [len(ids) for ids in call["completion_ids"]]
    assert float(row["train/completion_tokens"]) == pytest.approx(sum(lengths) / len(lengths))


def test_module_refuses_a_reward_scale_that_would_be_ignored_or_cancel_the_label_weights():
    weighted = TaskMetricReward(METRICS, label_weights={"flag": {"STANDARD": 0.5}})
    with pytest.raises(ValueError, match="GRPO's group std divides that weight away"):
        RLModule(model=lambda: None, reward=weighted, reference="copy")
    with pytest.raises(ValueError, match="scale_rewards='none' with loss_type=rloo"):
        RLModule(model=lambda: None, reward=weighted, loss_type="rloo", scale_rewards="none", reference="copy")
    with pytest.raises(ValueError, match="scale_rewards='std'"):
        RLModule(model=lambda: None, reward=weighted, scale_rewards="std", reference="copy")
    for accepted in ({"scale_rewards": "none"}, {"scale_rewards": "batch"}, {"loss_type": "rloo"}):
        RLModule(model=lambda: None, reward=weighted, reference="copy", **accepted)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, [0.5 / (0.5**0.5 + 1e-4), -0.5 / (0.5**0.5 + 1e-4), 0.0, 0.0]),  # group z-score: std of (3, 2) sqrt(0.5)
        ({"scale_rewards": "none"}, [0.5, -0.5, 0.0, 0.0]),  # Dr. GRPO: the group mean subtracted only
        ({"loss_type": "rloo"}, [1.0, -1.0, 0.0, 0.0]),  # G / (G - 1) * (r - mean) with G = 2
    ],
)
def test_first_pass_turns_rewards_into_the_chosen_advantages_on_each_completions_tokens(settings, expected):
    # two prompts x G=2: rewards (3, 2) and (5, 5); completion_index gives each token's completion (4: the prompt's)
    module = RLModule(model=lambda: None, reward=lambda r: None, group_size=2, beta=0.0, reference="copy", **settings)
    rollouts = {"rewards": torch.tensor([3.0, 2.0, 5.0, 5.0]), "completion_index": torch.tensor([[4, 4, 0, 1, 2, 3]])}
    module.first_pass(rollouts, torch.zeros(1, 5), None, torch.ones(1, 5))
    torch.testing.assert_close(rollouts["advantages"], torch.tensor([[0.0, *expected]]))


def test_last_answer_span_is_the_reference_and_what_precedes_it_the_prompt():
    # prompt 3 tokens, answer 2, a second prompt turn, answer 2, padding
    labels = torch.tensor(
        [[-100, -100, -100, 7, 8, -100, -100, 9, 10, -100], [-100, 4, 5, -100, -100, -100, -100, -100, -100, -100]]
    )
    assert last_answer_spans(labels) == [(7, 9), (1, 3)]
    with pytest.raises(ValueError, match="row 0 has no prompt"):
        last_answer_spans(torch.tensor([[1, 2, -100]]))
    with pytest.raises(ValueError, match="row 0 has no answer tokens"):
        last_answer_spans(torch.full((1, 3), -100))


def test_reward_model_scores_each_sequence_at_its_last_token(tmp_path, tokenizer):
    model = tiny_llama(tokenizer, head="score")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts, completions = [[10, 11, 12], [10, 11]], [[20, 21], [30, 31, 32, 33]]
    # each sequence scored alone, unpadded (the model's own pooling: its last token), against a padded batch of both
    with torch.no_grad():
        alone = [model.eval()(torch.tensor([p + c])).logits[0, 0] for p, c in zip(prompts, completions)]
    got = RewardModelReward(tmp_path)(rollouts(["", ""], ["", ""], ["a", "a"], tokenizer, prompts, completions))
    torch.testing.assert_close(got, torch.stack(alone), rtol=1e-4, atol=1e-5)

    class OtherTokenizer:
        def get_vocab(self):
            return {"a": 0}

        def __len__(self):
            return 1

    with pytest.raises(ValueError, match="another tokenizer"):
        RewardModelReward(tmp_path)(rollouts(["", ""], ["", ""], ["a", "a"], OtherTokenizer(), prompts, completions))


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_rl_legal_runs_and_logs_rewards_and_kl(tmp_path, shared_prompt):
    # shared-prompt rollouts need sdpa_varlen (the CPU default of real models; the tiny model's is sdpa)
    out = tmp_path / "run"
    run_entry_point([
        "experiment=rl_legal", "debug=tiny", f"paths.output_dir={out}", "logger=csv", "trainer.log_every_n_steps=1",
        "trainer.max_steps=2", "callbacks.task_scores.max_examples=4", "module.max_new_tokens=8",
        "+model.attn_implementation=sdpa_varlen", f"module.shared_prompt={str(shared_prompt).lower()}",
    ])  # fmt: skip
    [metrics_file] = out.glob("**/metrics.csv")
    rows = [row for row in csv.DictReader(metrics_file.open()) if row["train/reward"]]
    assert len(rows) == 2
    for row in rows:
        for name in ("train/reward", "train/reward/classify", "train/reward/flag", "train/kl", "train/loss"):
            assert math.isfinite(float(row[name])), name
        assert float(row["train/kl"]) >= 0.0  # k3 is never negative
        assert 0 < float(row["train/completion_tokens"]) <= 8  # bounded by max_new_tokens
        assert float(row["perf/rollout_tokens_per_s"]) > 0 and float(row["perf/train_tokens_per_s"]) > 0
    # 4 prompts x 4 completions a step, classify and flag rows only
    assert float(rows[0]["train/examples/classify"]) + float(rows[0]["train/examples/flag"]) == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "rl_legal" and "val/accuracy/classify" in summary["val_after"]
    assert (out / "model" / "model.safetensors").exists() and (out / "adapter" / "adapter_model.safetensors").exists()


def two_pass_run(out: Path, *overrides: str) -> list[dict[str, str]]:
    """Three steps of rl_legal on the tiny model with two passes over each batch of rollouts (epsilon 1e-3 and a
    large LR, so that the second pass's ratios leave the clip range); the logged rows of its steps."""
    run_entry_point([
        "experiment=rl_legal", "debug=tiny", f"paths.output_dir={out}", "logger=csv", "trainer.log_every_n_steps=1",
        "~reward", "module.reward={_target_:tests.support.rl.EvenTokenReward}", "module.num_iterations=2",
        "module.epsilon=0.001", "module.optimizer.lr=0.01", "module.max_new_tokens=6", "trainer.max_steps=3",
        "callbacks=[default]", *overrides,
    ])  # fmt: skip
    [metrics_file] = out.glob("**/metrics.csv")
    return [row for row in csv.DictReader(metrics_file.open()) if row["train/reward"]]


def test_second_pass_over_the_rollouts_is_importance_weighted_and_clipped(tmp_path):
    # num_iterations=2: step 1 samples (ratio 1: nothing clipped), step 2 reuses its rollouts after an update (ratios
    # away from 1: some clip), step 3 samples from the next batch (ratio 1 again).
    rows = two_pass_run(tmp_path / "run")
    assert [float(row["train/clip_frac"]) > 0 for row in rows] == [False, True, False]
    assert float(rows[0]["train/clip_frac"]) == 0.0 and float(rows[2]["train/clip_frac"]) == 0.0
    assert rows[0]["train/reward"] == rows[1]["train/reward"]  # the same rollouts, the same rewards
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["optimizer_steps"] == 3
    # clip-higher: the same first step and rollouts; on the second pass a token of positive advantage is clipped
    # only above ratio 1 + epsilon_high, so fewer tokens are, and those of negative advantage below 1 - epsilon still
    higher = two_pass_run(tmp_path / "higher", "module.epsilon_high=10")
    assert higher[0]["train/loss"] == rows[0]["train/loss"] and higher[1]["train/reward"] == rows[1]["train/reward"]
    assert 0 < float(higher[1]["train/clip_frac"]) < float(rows[1]["train/clip_frac"])


def test_ppo_trains_a_value_head_checkpoints_it_and_exports_the_policy_only(tmp_path):
    out = tmp_path / "run"
    run_entry_point([
        "experiment=rl_legal", "debug=tiny", "module.loss_type=ppo", f"paths.output_dir={out}", "logger=csv",
        "trainer.log_every_n_steps=1", "~reward", "module.reward={_target_:tests.support.rl.EvenTokenReward}",
        "module.max_new_tokens=6", "module.num_iterations=2", "trainer.max_steps=2", "callbacks=[default]",
        "callbacks.last_checkpoint.every_n_train_steps=1",
    ])  # fmt: skip
    [metrics_file] = out.glob("**/metrics.csv")
    rows = [row for row in csv.DictReader(metrics_file.open()) if row["train/reward"]]
    assert len(rows) == 2
    for row in rows:
        assert float(row["train/value_loss"]) >= 0 and math.isfinite(float(row["train/explained_variance"]))
    assert float(rows[0]["train/explained_variance"]) == 0.0  # values start at 0: they explain nothing yet
    assert "val/reward" in json.loads((out / "summary.json").read_text())["val_after"]
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["value_head.weight"].shape[0] == 1 and state["value_head.weight"].abs().sum() > 0  # trained from 0
    exported = load_file(out / "model" / "model.safetensors")
    assert exported and not any("value_head" in key for key in exported)


def test_val_reward_is_the_mean_reward_of_greedy_completions_and_early_stopping_can_monitor_it(tmp_path):
    # a reward of 1 for the completions of classify prompts, 0 for flag's: val/reward/<task> is 1 and 0, and
    # val/reward the share of classify rows among the validated ones
    out = tmp_path / "run"
    run_entry_point([
        "experiment=rl_legal", "debug=tiny", f"paths.output_dir={out}", "~reward",
        "module.reward={_target_:tests.support.rl.TaskTypeReward,task_type:classify}", "module.max_new_tokens=4",
        "trainer.max_steps=2", "trainer.val_check_interval=1", "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.monitor=val/reward", "callbacks.early_stopping.mode=max",
    ])  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    after = summary["val_after"]
    assert (after["val/reward/classify"], after["val/reward/flag"]) == (1.0, 0.0)
    classify, flag = after["val/examples/classify"], after["val/examples/flag"]
    assert classify > 0 and flag > 0 and after["val/reward"] == pytest.approx(classify / (classify + flag))
    assert summary["early_stopping"]["monitor"] == "val/reward"
    assert summary["early_stopping"]["best_score"] == pytest.approx(after["val/reward"])


def test_several_passes_with_gradient_accumulation_are_refused(tmp_path):
    # each pass over the rollouts must follow an update: accumulation would put both passes in one step
    result = run_entry_point(
        ["experiment=rl_legal", "debug=tiny", f"paths.output_dir={tmp_path}", "module.num_iterations=2",
         "trainer.accumulate_grad_batches=2"], check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "set trainer.accumulate_grad_batches=1" in result.stderr + result.stdout


def test_sampled_validation_leaves_training_sampling_alone(tmp_path):
    # validating after every step, greedy or sampled at val_temperature=1: the training steps sample and lose the same
    def losses(val_temperature: float) -> list[str]:
        out = tmp_path / str(val_temperature)
        run_entry_point([
            "experiment=rl_legal", "debug=tiny", f"paths.output_dir={out}", "logger=csv", "trainer.log_every_n_steps=1",
            "~reward", "module.reward={_target_:tests.support.rl.EvenTokenReward}", "module.max_new_tokens=6",
            "trainer.max_steps=3", "trainer.val_check_interval=1", "trainer.limit_val_batches=1", "callbacks=[default]",
            f"module.val_temperature={val_temperature}",
        ])  # fmt: skip
        [metrics_file] = out.glob("**/metrics.csv")
        rows = list(csv.DictReader(metrics_file.open()))
        assert len([row for row in rows if row["val/reward"]]) >= 3
        return [row["train/loss"] for row in rows if row["train/loss"]]

    greedy = losses(0.0)
    assert len(greedy) == 3 and losses(1.0) == greedy

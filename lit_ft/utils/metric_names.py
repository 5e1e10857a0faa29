"""The names lit-ft logs its metrics and tables under: one home for the code that logs them (modules, callbacks,
loggers) and the dashboards that plot them (:mod:`lit_ft.loggers.dashboard`), so a renamed metric renames its
panel too.

Families, with ``<stage>`` = ``train`` | ``val`` and ``<task>`` a task type of the data:

- ``train/loss`` (the optimised mean of a step), ``lr``, ``train/l2sp``, ``train/ewc``; ``val/loss``, ``val/ppl`` = exp(val/loss);
- preference modules: ``<stage>/rewards/{chosen,rejected,accuracies,margins}``, DPO also ``<stage>/logps/...``;
- per task (:class:`~lit_ft.callbacks.TaskMetrics`): ``<stage>/<name>/<task>`` for ``loss``, the counts
  ``tokens`` and ``examples``, and each per-example metric of a preference module;
- forgetting (:class:`~lit_ft.callbacks.ForgettingCheck`): ``forgetting/<score>`` and its ``_delta`` (score minus
  baseline), ``_baseline`` and ``_threshold`` (the value a warning fires past) as reference lines;
- online RL: ``train/{reward,reward_std,kl,clip_frac,completion_tokens,truncated}``, PPO also
  ``train/{value_loss,explained_variance}``; ``val/reward`` (and per task ``val/reward/<task>``);
- throughput (:class:`~lit_ft.callbacks.Throughput`): ``perf/...``;
- tables: ``samples`` (each generation stage), and at the end of a run ``forgetting_results``, ``per_task`` and
  ``samples_before_after``; the run summary's scalars as ``final/<key>``.
"""

from __future__ import annotations

STEP = "trainer/global_step"  # the x axis of every panel: optimizer steps
EPOCH = "epoch"  # Lightning logs it with every metric
AXES = (STEP, EPOCH)

TRAIN_LOSS = "train/loss"
LR = "lr"
L2SP = "train/l2sp"
EWC = "train/ewc"
VAL_LOSS = "val/loss"
VAL_PPL = "val/ppl"

STAGES = ("train", "val")
VAL_PREFIX = "val/"  # what every validation metric starts with: stage_metric("val", name)
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")
LOGP_METRICS = ("logps/chosen", "logps/rejected")
TASK_COUNTS = ("tokens", "examples")  # per-task counts next to the per-task means
TASK_LOSS = "loss"

FORGETTING = "forgetting"
MCQ_ACC = "mcq_acc"
PROSE_PPL = "prose_ppl"
FORGETTING_KINDS = ("delta", "baseline", "threshold")

# online RL (lit_ft.modules.RLModule): train/<name> per step; reward and kl also per task (train/reward/<task>)
RL_METRICS = ("reward", "reward_std", "kl", "clip_frac", "completion_tokens", "truncated")
PPO_METRICS = ("value_loss", "explained_variance")  # train/<name>, loss_type=ppo only
RL_VAL_REWARD = "val/reward"  # mean reward of one completion per validation prompt (per task: val/reward/<task>)
ROLLOUT_TOKENS_PER_S = "perf/rollout_tokens_per_s"  # sampled completion tokens per second of generation
TRAIN_TOKENS_PER_S = "perf/train_tokens_per_s"  # rollout sequence tokens per second of the policy's forward/backward

TOKENS_PER_S = "perf/tokens_per_s"
SAMPLES_PER_S = "perf/samples_per_s"
MFU = "perf/mfu"
PEAK_MEM_GB = "perf/peak_mem_gb"

SAMPLES_TABLE = "samples"
# not "forgetting": the fields W&B logs for a table (forgetting/_type, forgetting/size) would mix with the metrics
FORGETTING_TABLE = "forgetting_results"
PER_TASK_TABLE = "per_task"
SAMPLES_BEFORE_AFTER_TABLE = "samples_before_after"
TASK_SCORES_TABLE = "task_scores"
FINAL = "final"


def stage_metric(stage: str, name: str) -> str:
    """``("val", "rewards/margins")`` -> ``"val/rewards/margins"``."""
    return f"{stage}/{name}"


def task_metric(stage: str, name: str, task: str) -> str:
    """``("val", "loss", "summarize")`` -> ``"val/loss/summarize"``."""
    return f"{stage}/{name}/{task}"


def split_task_metric(key: str) -> tuple[str, str]:
    """``"val/rewards/accuracies/flag"`` -> ``("rewards/accuracies", "flag")``: the inverse of :func:`task_metric`."""
    name, task = key.split("/", 1)[1].rsplit("/", 1)
    return name, task


def forgetting_metric(score: str, kind: str | None = None) -> str:
    """``("mcq_acc", "delta")`` -> ``"forgetting/mcq_acc_delta"``; no kind: the score itself."""
    if kind is not None and kind not in FORGETTING_KINDS:
        raise ValueError(f"kind must be one of {FORGETTING_KINDS} or None, got {kind!r}")
    return f"{FORGETTING}/{score}" + (f"_{kind}" if kind else "")


def final_metric(key: str) -> str:
    """A run summary's scalar in the W&B run summary: ``"best_val_loss"`` -> ``"final/best_val_loss"``."""
    return f"{FINAL}/{key}"

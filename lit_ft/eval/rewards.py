"""Reward sources of online RL (:class:`~lit_ft.modules.RLModule`): each maps a step's rollouts to one reward per
completion [N]. Chosen by the ``reward`` config group: a task metric against the row's reference (verifiable
rewards), a reward model exported by a reward-model run, a format reward, or a weighted sum of several."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from lit_ft.eval.labels import LabelMetrics, normalised_label
from lit_ft.eval.task_metrics import TaskMetric, metric_for
from lit_ft.models import load_tokenizer
from lit_ft.modules.rl import RewardSource, Rollouts, checked_rewards


def example_reward(scores: Mapping[str, Any]) -> float:
    """One number from a task metric's per-example scores: ``correct`` (label tasks: 1.0 when the parsed label equals
    the reference's) when present, else the mean of its float scores (text tasks: e.g. ROUGE-L)."""
    if "correct" in scores:
        return float(scores["correct"])
    values = [value for value in scores.values() if isinstance(value, float)]
    if not values:
        raise ValueError(f"task metric scores {dict(scores)} hold no number to use as a reward")
    return sum(values) / len(values)


class TaskMetricReward:
    """The task metric of each completion's task type (``conf/task_metrics/``: exact label match for classify and
    flag, ROUGE-L and friends for summarize), applied to the completion and the row's reference.

    ``label_weights`` weighs a label task's reward by the label of the row's reference, e.g. ``{flag:
    {NON-STANDARD: 1.25, STANDARD: 0.83}}`` (``n / (k * n_label)`` over the training prompts: class-balanced, so a
    policy that answers every prompt with the majority label earns no more than one that answers the minority
    one). Labels are matched after the metric's parser normalises them; a label not listed weighs 1. The weight is
    per prompt, so the advantages must keep the reward's scale (:attr:`scales_prompts`): GRPO's group std divides
    it away, and the RL module refuses that pairing.

    Args:
        metrics: task type (or ``default``) -> task metric, as ``eval.py`` scores with.
        label_weights: task type -> reference label -> weight (> 0); each task type's metric must parse labels.
    """

    def __init__(
        self, metrics: Mapping[str, TaskMetric], label_weights: Mapping[str, Mapping[str, float]] | None = None
    ) -> None:
        self.metrics = dict(metrics)
        self.label_weights: dict[str, dict[str, float]] = {}
        for task, weights in (label_weights or {}).items():
            metric = metric_for(self.metrics, task)
            if not isinstance(metric, LabelMetrics):
                raise ValueError(f"label_weights for task type {task!r}, whose metric parses no labels "
                                 f"({type(metric).__name__}): weigh only label task types")  # fmt: skip
            bad = {label: weight for label, weight in weights.items() if not weight > 0}
            if bad:
                raise ValueError(f"label_weights[{task!r}] must be > 0, got {bad}")
            self.label_weights[task] = {
                normalised_label(str(label)): float(weight) for label, weight in weights.items()
            }

    @property
    def scales_prompts(self) -> bool:
        """Whether the reward carries a per-prompt weight (``label_weights``)."""
        return bool(self.label_weights)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        rewards = []
        for index, (completion, reference, task) in enumerate(
            zip(rollouts.completions, rollouts.references, rollouts.task_types)
        ):
            metric = metric_for(self.metrics, task)
            if metric is None:
                raise ValueError(f"no task metric for task type {task!r} (and no `default`): add one to task_metrics")
            if not reference:
                raise ValueError(f"completion {index} ({task}): its row has no reference answer to score against")
            scores = metric.example(completion, reference)
            weight = self.label_weights.get(task, {}).get(scores.get("reference_label"), 1.0)
            rewards.append(weight * example_reward(scores))
        return torch.tensor(rewards)


class FormatReward:
    """1.0 when a completion keeps the house notation of its task type (its label parses: ``TYPE: <label>``,
    ``FLAG: STANDARD|NON-STANDARD``), else 0.0. The patterns are the task metrics' parsers, so the two cannot drift.

    Args:
        metrics: task type (or ``default``) -> task metric; a task type whose metric has no label parser is refused.
    """

    def __init__(self, metrics: Mapping[str, TaskMetric]) -> None:
        self.metrics = dict(metrics)

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        rewards = []
        for completion, task in zip(rollouts.completions, rollouts.task_types):
            metric = metric_for(self.metrics, task)
            if not isinstance(metric, LabelMetrics):
                raise ValueError(
                    f"the format reward parses label answers, and task type {task!r} has no label parser "
                    f"({type(metric).__name__}): keep its rows out of the RL data (task_types) or drop the format reward"
                )
            rewards.append(float(metric.parser(completion) is not None))
        return torch.tensor(rewards)


class WeightedSum:
    """``sum_k weights[k] * sources[k](rollouts)``.

    Args:
        sources: name -> reward source.
        weights: name -> weight, one for each source (and no other).
    """

    def __init__(self, sources: Mapping[str, RewardSource], weights: Mapping[str, float]) -> None:
        if set(sources) != set(weights):
            raise ValueError(f"weights {sorted(weights)} must name exactly the sources {sorted(sources)}")
        self.sources, self.weights = dict(sources), dict(weights)

    @property
    def scales_prompts(self) -> bool:
        """Whether a source carries a per-prompt weight (see :attr:`TaskMetricReward.scales_prompts`)."""
        return any(getattr(source, "scales_prompts", False) for source in self.sources.values())

    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        count = len(rollouts.completions)  # each part is checked, so a bad one is named
        parts = [self.weights[n] * checked_rewards(s(rollouts), count, s) for n, s in self.sources.items()]
        return torch.stack(parts).sum(0)


class RewardModelReward:
    """The score of a reward model exported by a reward-model run (``experiment=rm_legal``'s ``model/`` folder) on
    prompt + completion, read at the last token as :class:`~lit_ft.modules.RewardModelModule` trains it.

    Args:
        path: the exported folder (``AutoModelForSequenceClassification`` and its tokenizer).
        batch_size: sequences scored per forward.
    """

    def __init__(self, path: str | Path, batch_size: int = 16) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(
                f"no reward model at {self.path}: run experiment=rm_legal first (its model/ folder)"
            )
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=torch.float32).eval()
        self.tokenizer = load_tokenizer(str(self.path))
        self.batch_size = batch_size
        self._checked = False

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a policy tokenizer other than the reward model's: token ids would mean other words."""
        if not self._checked and tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                f"the reward model at {self.path} was trained with another tokenizer than the policy's "
                f"({len(self.tokenizer)} vs {len(tokenizer)} tokens): train the reward model on the policy's base model"
            )
        self._checked = True

    @torch.no_grad()
    def __call__(self, rollouts: Rollouts) -> torch.Tensor:
        self.check_tokenizer(rollouts.tokenizer)
        self.model.to(rollouts.device)
        head = getattr(self.model, "score", None)
        if head is None:
            raise ValueError(f"{type(self.model).__name__} has no `score` head to read rewards from")
        sequences = [p + c for p, c in zip(rollouts.prompt_ids, rollouts.completion_ids)]
        pad = self.tokenizer.pad_token_id or 0
        rewards = []
        scores: list[torch.Tensor] = []  # the head's per-token output [b, T, 1] of each forward
        hook = head.register_forward_hook(lambda module, args, output: scores.append(output))
        try:
            for start in range(0, len(sequences), self.batch_size):
                chunk = sequences[start : start + self.batch_size]
                width = max(map(len, chunk))
                ids = torch.tensor([s + [pad] * (width - len(s)) for s in chunk], device=rollouts.device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=rollouts.device)
                self.model(input_ids=ids, attention_mask=mask)
                last = mask.sum(-1) - 1  # each sequence's last token (right padding)
                rewards.append(scores[-1][torch.arange(len(chunk), device=ids.device), last, 0].float())
        finally:
            hook.remove()
        return torch.cat(rewards).cpu()

"""Task scores of a model: greedy (or sampled) answers to held-out prompts, scored by the task metrics.

One function for ``eval.py`` (:mod:`lit_ft.evaluate`) and the :class:`~lit_ft.callbacks.TaskScores` callback, so a
run's scores during training are those ``eval.py`` reports for the same weights, prompts and settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.data.prompts import Prompt
from lit_ft.eval.generation import decode_answer, generate_answer_ids
from lit_ft.eval.task_metrics import TaskMetric, score_generations


@dataclass
class ScoredGenerations:
    """Answers with their scores, the aggregate per task type, and what generating them cost."""

    # each prompt with its ``generation``, ``tokens`` and (when it has a reference) ``scores``
    rows: list[dict[str, Any]]
    per_task: dict[str, dict[str, float]]  # task type -> metric -> value (counts such as ``n`` are ints)
    seconds: float  # wall time of generating and scoring
    tokens: int  # answer tokens generated (end-of-turn not counted), over all prompts


def generate_and_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    metrics: Mapping[str, TaskMetric],
    **generation: Any,
) -> ScoredGenerations:
    """Answer ``prompts`` (``generation``: the options of :func:`~lit_ft.eval.generation.generate_answer_ids`) and
    score the answers with ``metrics`` (task type or ``default`` -> metric; see
    :func:`~lit_ft.eval.task_metrics.score_generations`)."""
    started = time.perf_counter()
    answer_ids = generate_answer_ids(model, tokenizer, prompts, **generation)
    rows = [
        {**prompt, "generation": decode_answer(tokenizer, ids), "tokens": len(ids)}
        for prompt, ids in zip(prompts, answer_ids)
    ]
    per_task = score_generations(rows, metrics)
    return ScoredGenerations(rows, per_task, time.perf_counter() - started, sum(len(ids) for ids in answer_ids))

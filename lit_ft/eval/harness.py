"""Optional: lm-evaluation-harness tasks by name, on the in-memory model (only when ``lm_eval`` is installed).

lit-ft does not depend on ``lm_eval`` (``pip install lm-eval`` adds it); without it, :func:`harness_available`
is False and callers fall back to the shipped general-ability set (:mod:`lit_ft.eval.general`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase


def harness_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def flatten_results(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{"arc_easy": {"acc,none": 0.6, "acc_stderr,none": 0.01, "alias": ...}}`` -> ``{"arc_easy_acc": 0.6}``."""
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            name = key.split(",")[0]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not name.endswith("_stderr"):
                flat[f"{task}_{name}"] = float(value)
    return flat


def run_harness(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    limit: int | float | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Evaluate ``model`` on lm-eval ``tasks`` (``limit`` examples per task) and return their scalar metrics."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(model=wrapped, tasks=list(tasks), limit=limit)
    return flatten_results(output["results"])

"""Evaluation: the general-ability (forgetting) set and lm-eval tasks, shared with the callbacks; per-task loss,
generations and task metrics, label margins (how well a model separates two labels), pairwise judging, blind A/B
pages for people, run-vs-run diffs, chat, data reports.

Commands: ``python eval.py`` (``mode=eval|chat|data_report``, wired in :mod:`lit_ft.evaluate`) and
``python -m lit_ft.eval.judge|blind_ab|diff|label_margins``. The command modules are imported on use; the task
metrics are exported here because configs name them (``lit_ft.eval.TextOverlap``, ``lit_ft.eval.LabelMetrics``).
"""

from lit_ft.data.readers import load_passages
from lit_ft.eval.general import GeneralAbility, Question, continuation_logprobs, load_questions
from lit_ft.eval.harness import harness_available, run_harness
from lit_ft.eval.labels import LabelMetrics, LabelParser
from lit_ft.eval.task_metrics import score_generations
from lit_ft.eval.text_metrics import TextOverlap, exact_match, rouge_l, token_f1

__all__ = [
    "GeneralAbility",
    "LabelMetrics",
    "LabelParser",
    "Question",
    "TextOverlap",
    "continuation_logprobs",
    "exact_match",
    "harness_available",
    "load_passages",
    "load_questions",
    "rouge_l",
    "run_harness",
    "score_generations",
    "token_f1",
]

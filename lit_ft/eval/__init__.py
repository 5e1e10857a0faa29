"""Evaluation helpers shared by callbacks and commands: the general-ability (forgetting) set, lm-eval tasks."""

from lit_ft.eval.general import GeneralAbility, Question, continuation_logprobs, load_passages, load_questions
from lit_ft.eval.harness import harness_available, run_harness

__all__ = [
    "GeneralAbility",
    "Question",
    "continuation_logprobs",
    "harness_available",
    "load_passages",
    "load_questions",
    "run_harness",
]

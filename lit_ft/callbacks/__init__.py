"""Callbacks that observe training: metric history, per-task loss, task scores, early stopping, forgetting, samples,
throughput; and training recipes that act on it (NEFTune, gradual unfreezing)."""

from lit_ft.callbacks.divergence import DivergenceError, DivergenceGuard
from lit_ft.callbacks.early_stopping import EarlyStoppingWithRestore
from lit_ft.callbacks.forgetting import ForgettingCheck
from lit_ft.callbacks.generation import GenerationSamples
from lit_ft.callbacks.history import MetricHistory
from lit_ft.callbacks.neftune import NEFTune
from lit_ft.callbacks.progress import ProgressBar
from lit_ft.callbacks.task_metrics import TaskMetrics
from lit_ft.callbacks.task_scores import TaskScores
from lit_ft.callbacks.throughput import Throughput
from lit_ft.callbacks.unfreezing import GradualUnfreezing

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "EarlyStoppingWithRestore",
    "ForgettingCheck",
    "GenerationSamples",
    "GradualUnfreezing",
    "MetricHistory",
    "NEFTune",
    "ProgressBar",
    "TaskMetrics",
    "TaskScores",
    "Throughput",
]

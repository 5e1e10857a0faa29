"""Callbacks that observe training: metric history, per-task loss, early stopping, forgetting, samples, throughput."""

from lit_ft.callbacks.divergence import DivergenceError, DivergenceGuard
from lit_ft.callbacks.generation import GenerationSamples
from lit_ft.callbacks.history import MetricHistory

__all__ = ["DivergenceError", "DivergenceGuard", "GenerationSamples", "MetricHistory"]

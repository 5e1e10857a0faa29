"""Learning-rate schedules as ``LambdaLR`` multipliers of the base learning rate, stepped once per optimizer step.

Every schedule is one shape: linear warmup from 0, a stable phase at the base LR, then a decay to a floor.

    multiplier(s) = s / W                                  for s < W                (warmup)
                  = 1                                      for W <= s < S - D       (stable)
                  = r + (1 - r) * shape((s - (S - D)) / D) for s >= S - D           (decay)

with W warmup steps, S training steps, D decay steps, r = ``min_lr_ratio`` and ``shape`` going from 1 to 0:

- cosine (the default): D = S - W, ``shape(p) = (1 + cos(pi p)) / 2``
- linear: D = S - W, ``shape(p) = 1 - p``
- constant with warmup: D = 0 (``decay_shape="none"``)
- warmup-stable-decay (WSD, Hu et al., 2024 "MiniCPM"; Hägele et al., 2024): D a short final part of training
  (``decay=0.1``: the last 10% of steps), ``linear`` or ``sqrt`` (``shape(p) = 1 - sqrt(p)``) shape. The LR stays
  at its peak until the decay, so a continued pre-training run can be extended from any stable-phase checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DecayShape = Literal["cosine", "linear", "sqrt", "none"]

DECAY_SHAPES: dict[str, Callable[[float], float]] = {
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "linear": lambda p: 1 - p,
    "sqrt": lambda p: 1 - math.sqrt(p),
}


def steps_of(amount: float, num_training_steps: int) -> int:
    """``amount`` below 1 is a fraction of the training steps, otherwise a number of steps."""
    return round(amount * num_training_steps) if amount < 1 else int(amount)


def warmup_decay_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    warmup: float = 0.05,
    min_lr_ratio: float = 0.1,
    decay_shape: DecayShape = "cosine",
    decay: float | None = None,
) -> LambdaLR:
    """Warmup, stable phase, decay to ``min_lr_ratio`` (see the module docstring for the formula).

    Args:
        warmup: warmup length, a fraction of the training steps (< 1) or a number of steps.
        min_lr_ratio: the floor the decay ends at, as a fraction of the base LR.
        decay_shape: ``cosine``, ``linear``, ``sqrt`` or ``none`` (constant after warmup).
        decay: decay length, a fraction of the training steps (< 1) or a number of steps; ``None`` decays over
            everything after warmup (no stable phase). A decay of 0.1 with ``linear`` shape is WSD.
    """
    if decay_shape != "none" and decay_shape not in DECAY_SHAPES:
        raise ValueError(f"unknown decay_shape {decay_shape!r} (expected one of {', '.join(DECAY_SHAPES)}, none)")
    warmup_steps = steps_of(warmup, num_training_steps)
    decay_steps = num_training_steps - warmup_steps if decay is None else steps_of(decay, num_training_steps)
    decay_steps = min(decay_steps, num_training_steps - warmup_steps)
    decay_start = num_training_steps - decay_steps
    shape = DECAY_SHAPES.get(decay_shape)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        if shape is None or step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, decay_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * shape(progress)

    return LambdaLR(optimizer, multiplier)


def warmup_cosine_schedule(
    optimizer: Optimizer, num_training_steps: int, warmup: float = 0.05, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warmup from 0, then cosine decay reaching ``min_lr_ratio`` times the base LR at step
    ``num_training_steps`` (the step after the last update, as in transformers' schedules)."""
    return warmup_decay_schedule(optimizer, num_training_steps, warmup, min_lr_ratio, "cosine")

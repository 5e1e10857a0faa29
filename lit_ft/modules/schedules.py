"""Learning-rate schedules as ``LambdaLR`` multipliers of the base learning rate, stepped once per optimizer step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_of(warmup: float, num_training_steps: int) -> int:
    """``warmup`` below 1 is a fraction of the training steps, otherwise a number of steps."""
    return round(warmup * num_training_steps) if warmup < 1 else int(warmup)


def warmup_cosine_schedule(
    optimizer: Optimizer, num_training_steps: int, warmup: float = 0.05, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Linear warmup from 0, then cosine decay to ``min_lr_ratio`` times the base LR at the last step.

    multiplier(s) = s / W for s < W, else r + (1 - r) * (1 + cos(pi * (s - W) / (S - W))) / 2,
    with W warmup steps, S training steps and r = ``min_lr_ratio``.
    """
    warmup_steps = warmup_steps_of(warmup, num_training_steps)
    decay_steps = max(1, num_training_steps - warmup_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, multiplier)

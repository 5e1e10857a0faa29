"""Optimizer parameter groups."""

from __future__ import annotations

from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over trainable parameters: matrices decay, norms and biases (ndim < 2) do not.

    This is the split of Hugging Face's Trainer and nanoGPT: decaying a gain or a bias toward 0 only
    fights the layer's scale, while decay on weight matrices regularises.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]

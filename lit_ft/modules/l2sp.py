"""L2-SP: a pull of the trainable weights toward the values they had when the model was built (the pretrained
weights), added to the averaged gradients before the optimizer step."""

from __future__ import annotations

import torch
from torch import nn

from lit_ft.losses import l2_sp_penalty
from lit_ft.utils.distributed import is_sharded, unwrapped_name


class L2SP:
    """``strength * ||theta - theta_0||^2`` over the trainable weights (Li, Grandvalet and Davoine, 2018;
    :func:`lit_ft.losses.l2_sp_penalty`). Its gradient is added to the token-averaged gradient, so the pull does
    not grow with the number of tokens in a step.

    ``theta_0`` is copied by :meth:`anchor` when the model is built; it is not in the state dict (a resumed run
    rebuilds it from the pretrained model).
    """

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.anchors: dict[str, torch.Tensor] = {}

    def anchor(self, module: nn.Module) -> None:
        """Copy ``module``'s trainable weights as ``theta_0``."""
        self.anchors = {unwrapped_name(n): p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def add_gradient(self, module: nn.Module) -> torch.Tensor:
        """Add ``2 * strength * (theta - theta_0)`` to each trainable weight's gradient; return the penalty."""
        if is_sharded(module):
            raise ValueError("L2-SP needs whole parameters; it does not support sharded (FSDP/ZeRO-3) training")
        named = ((unwrapped_name(n), p) for n, p in module.named_parameters() if p.requires_grad)
        params = {n: p for n, p in named if n in self.anchors}
        for name, parameter in params.items():
            self.anchors[name] = self.anchors[name].to(parameter.device)  # once, after device moves
            pull = 2 * self.strength * (parameter - self.anchors[name])
            parameter.grad = pull if parameter.grad is None else parameter.grad.add_(pull)
        return self.strength * l2_sp_penalty(list(params.values()), [self.anchors[n] for n in params])

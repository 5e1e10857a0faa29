"""L2-SP: a pull of the trainable weights toward the values they had when the model was built (the pretrained
weights), added to the averaged gradients before the optimizer step. The base of EWC (:mod:`lit_ft.modules.ewc`),
which weights the same pull by each weight's Fisher information."""

from __future__ import annotations

import torch
from torch import nn

from lit_ft.losses import l2_sp_penalty
from lit_ft.utils.distributed import is_sharded, unwrapped_name
from lit_ft.utils.metric_names import L2SP as L2SP_METRIC


class L2SP:
    """``strength * ||theta - theta_0||^2`` over the trainable weights (Li, Grandvalet and Davoine, 2018;
    :func:`lit_ft.losses.l2_sp_penalty`). Its gradient is added to the token-averaged gradient, so the pull does
    not grow with the number of tokens in a step.

    ``theta_0`` is copied by :meth:`anchor` when the model is built; it is not in the state dict (a resumed run
    rebuilds it from the pretrained model).

    Subclasses weight each weight's pull (:meth:`importance`) and say what the penalty is (:meth:`penalty`).
    """

    metric = L2SP_METRIC  # what its penalty is logged as

    def __init__(self, strength: float) -> None:
        self.strength = strength
        self.anchors: dict[str, torch.Tensor] = {}

    def anchor(self, module: nn.Module) -> None:
        """Copy ``module``'s trainable weights as ``theta_0``."""
        self.anchors = {unwrapped_name(n): p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    def importance(self, name: str, parameter: torch.Tensor) -> torch.Tensor | float:
        """The weight of each element of ``name`` in the penalty (1 for L2-SP), on ``parameter``'s device."""
        return 1.0

    def penalty(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        """The penalty without ``strength``, over ``parameters`` (name -> trainable weight)."""
        return l2_sp_penalty(list(parameters.values()), [self.anchors[n] for n in parameters])

    @torch.no_grad()
    def add_gradient(self, module: nn.Module) -> torch.Tensor:
        """Add ``2 * strength * importance * (theta - theta_0)`` to each trainable weight's gradient; return the
        penalty, ``strength`` included."""
        if is_sharded(module):
            raise ValueError(
                f"{type(self).__name__} needs whole parameters; it does not support sharded (FSDP/ZeRO-3) training"
            )
        named = ((unwrapped_name(n), p) for n, p in module.named_parameters() if p.requires_grad)
        params = {n: p for n, p in named if n in self.anchors}
        for name, parameter in params.items():
            self.anchors[name] = self.anchors[name].to(parameter.device)  # once, after device moves
            pull = 2 * self.strength * self.importance(name, parameter) * (parameter - self.anchors[name])
            parameter.grad = pull if parameter.grad is None else parameter.grad.add_(pull)
        return self.strength * self.penalty(params)

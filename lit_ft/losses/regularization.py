"""Regularisers on parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def l2_sp_penalty(parameters: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2-SP (Li, Grandvalet and Davoine, 2018, "Explicit inductive bias for transfer learning"):
    ``sum_i ||theta_i - theta0_i||^2``, the squared distance of the weights from their starting point (the
    pretrained weights), instead of plain weight decay's distance from 0. Scaled by ``lambda`` by the caller;
    its gradient is ``2 * (theta_i - theta0_i)``.
    """
    total = torch.zeros((), dtype=torch.float32, device=parameters[0].device if parameters else None)
    for parameter, anchor in zip(parameters, anchors, strict=True):
        total = total + (parameter.float() - anchor.to(parameter.device).float()).pow(2).sum()
    return total


def ewc_penalty(
    parameters: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Elastic Weight Consolidation (Kirkpatrick et al., 2017, "Overcoming catastrophic forgetting in neural
    networks"): ``sum_i F_i (theta_i - theta0_i)^2``, L2-SP's distance with each weight weighted by its diagonal
    Fisher information ``F_i`` on the old data (how much the old loss depends on it). Scaled by ``lambda`` by the
    caller, without the paper's 1/2 (``lambda * sum F (theta - theta0)^2`` is the paper's penalty with its lambda
    equal to 2 lambda); its gradient is ``2 * F_i * (theta_i - theta0_i)``. All three sequences align.
    """
    total = torch.zeros((), dtype=torch.float32, device=parameters[0].device if parameters else None)
    for parameter, anchor, fisher in zip(parameters, anchors, fishers, strict=True):
        delta = parameter.float() - anchor.to(parameter.device).float()
        total = total + (fisher.to(parameter.device).float() * delta.pow(2)).sum()
    return total

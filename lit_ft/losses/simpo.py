"""SimPO: reference-free preference optimisation with length-normalised rewards and a target margin."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float = 2.0,
    gamma: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair SimPO loss (Meng, Xia and Chen, 2024).

    ``loss = -(1 - e) log sigmoid(beta (a_c - a_r) - gamma) - e log sigmoid(-(beta (a_c - a_r) - gamma))``

    where ``a`` are length-averaged completion log-probs (``completion_logps(..., average=True)``), ``gamma``
    the target reward margin and ``e`` optional label smoothing, in [0, 0.5) (``DPOModule`` checks it when it is
    built). No reference model.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each [B]; rewards ``beta * a`` (detached).
    """
    logits = beta * (policy_chosen_logps - policy_rejected_logps) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()

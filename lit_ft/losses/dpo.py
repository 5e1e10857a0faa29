"""Direct Preference Optimization and its reference-based variants (cDPO, robust DPO, SLiC hinge, IPO)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "robust", "hinge", "ipo"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family losses and implicit rewards.

    With ``h = (logp_c - logp_r) - (ref_c - ref_r)`` (policy log-ratio minus reference log-ratio) and
    label smoothing ``e``:

    - ``sigmoid``: ``-(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)``. DPO (Rafailov et al., 2023);
      with ``e > 0`` the conservative cDPO of Mitchell (2023), for preference labels flipped with probability ``e``.
    - ``robust``: ``(-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)) / (1 - 2e)``, the unbiased
      estimator of robust DPO (Chowdhury et al., 2024), ``e < 0.5``.
    - ``hinge``: ``max(0, 1 - beta h)``, the SLiC hinge loss on log-ratios (Zhao et al., 2023).
    - ``ipo``: ``(h - 1 / (2 beta))^2``, IPO (Azar et al., 2023); pass length-averaged log-probs.

    Implicit rewards: ``r_c = beta (logp_c - ref_c)``, ``r_r = beta (logp_r - ref_r)`` (detached, for logging).
    With policy == reference, ``h = 0`` and the sigmoid loss is ``log 2``.

    Args:
        policy_* / ref_*: [B] completion log-probabilities (summed, or averaged for IPO).
        beta: strength of the KL constraint to the reference (the inverse temperature of the implicit reward).
        label_smoothing: ``e`` in [0, 0.5), used by ``sigmoid`` and ``robust`` only (``DPOModule`` checks both when
            it is built).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each [B].
    """
    h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h) + label_smoothing * F.logsigmoid(-beta * h)) / (
            1 - 2 * label_smoothing
        )
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r} (sigmoid, robust, hinge, ipo)")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards

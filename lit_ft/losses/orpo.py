"""ORPO: supervised fine-tuning and an odds-ratio preference penalty in one reference-free loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def log_odds(logps: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` from ``log p`` (< 0), computed as ``log p - log(-expm1(log p))`` for stability.

    ``log p`` is clamped to at most ``-1e-6`` so that a completion of probability 1 keeps a finite log-odds.
    """
    logps = logps.clamp(max=-1e-6)
    return logps - torch.log(-torch.expm1(logps))


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair ORPO loss (Hong, Lee and Thorne, 2024).

    ``loss = -a_c + beta * (-log sigmoid(log odds(a_c) - log odds(a_r)))``

    where ``a`` are length-averaged completion log-probs (``completion_logps(..., average=True)``), so ``-a_c``
    is the chosen answer's token-mean NLL (the SFT term) and ``odds(a) = exp(a) / (1 - exp(a))``; ``beta`` is
    the paper's lambda. No reference model.

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``, each [B]; rewards ``beta * a`` (detached).
    """
    ratio = log_odds(policy_chosen_logps) - log_odds(policy_rejected_logps)
    losses = -policy_chosen_logps - beta * F.logsigmoid(ratio)
    return losses, beta * policy_chosen_logps.detach(), beta * policy_rejected_logps.detach()

"""Pairwise reward-model loss (Bradley-Terry)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reward_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float = 0.0,
) -> torch.Tensor:
    """Per-pair Bradley-Terry loss of a scalar reward model, with optional margin and reward centring.

    ``loss_i = -log sigmoid(r_c,i - r_r,i - m_i) + c * (r_c,i + r_r,i)^2``

    - Bradley & Terry (1952); as a reward-model loss: Ouyang et al., 2022 (InstructGPT).
    - The margin ``m`` (how much better the chosen answer is) follows Touvron et al., 2023 (Llama 2); 0 where absent.
    - The centring term (coefficient ``c``) keeps rewards near zero mean (Eisenstein et al., 2023, "Helping or
      Herding?"), as TRL's ``center_rewards_coefficient``.

    The mean of the returned values is the batch loss ``-mean(log sigmoid(r_c - r_r - m)) + c * mean((r_c + r_r)^2)``.

    Args:
        chosen_rewards / rejected_rewards: [B] scalar rewards of the chosen and rejected answers.
        margin: [B] or ``None`` (no margin).

    Returns:
        [B] per-pair losses.
    """
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        logits = logits - margin
    losses = -F.logsigmoid(logits)
    if center_rewards_coefficient:
        losses = losses + center_rewards_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return losses

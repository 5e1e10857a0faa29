"""Log-probabilities of completions: the sequence-level quantity preference losses compare."""

from __future__ import annotations

import torch


def completion_logps(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence's completion tokens, from per-token next-token NLLs.

    ``logp(y | x) = -sum_t nll[b, t] * mask[b, t]``: the sum over completion positions (prompt and padding
    excluded by the mask) of ``log softmax(logits[b, t])[labels[b, t + 1]]``. With ``average`` the sum is
    divided by the number of completion tokens: the length-normalised log-probability of IPO (Azar et al.,
    2023), SimPO (Meng et al., 2024) and ORPO (Hong et al., 2024).

    Args:
        per_token_loss / loss_mask: [B, T-1] from :func:`~lit_ft.losses.token_cross_entropy` or
            :func:`~lit_ft.losses.masked_head_cross_entropy` (labels ``-100`` outside the completion).

    Returns:
        [B] float32 log-probabilities (0 for a row with no completion token).
    """
    logps = -(per_token_loss.float() * loss_mask).sum(-1)
    return logps / loss_mask.sum(-1).clamp(min=1) if average else logps

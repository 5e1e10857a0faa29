"""Log-probabilities of completions: the sequence-level quantity preference losses compare."""

from __future__ import annotations

import torch

from lit_ft.losses.causal_lm import token_cross_entropy


def completion_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence's completion tokens under the model.

    ``logp(y | x) = sum_t log softmax(logits[b, t])[labels[b, t + 1]]`` over the positions whose target is
    not ``-100`` (the completion tokens, prompt and padding excluded). With ``average`` the sum is divided by
    the number of completion tokens: the length-normalised log-probability of IPO (Azar et al., 2023),
    SimPO (Meng et al., 2024) and ORPO (Hong et al., 2024).

    Args:
        logits: [B, T, V] model outputs.
        labels: [B, T] unshifted labels, ``-100`` outside the completion.

    Returns:
        [B] float32 log-probabilities (0 for a row with no completion token).
    """
    per_token_loss, mask = token_cross_entropy(logits, labels)
    logps = -(per_token_loss * mask).sum(-1)
    return logps / mask.sum(-1).clamp(min=1) if average else logps

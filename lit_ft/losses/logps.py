"""Log-probabilities of completions: the sequence-level quantity preference losses compare."""

from __future__ import annotations

import torch


def completion_logps(
    per_token_loss: torch.Tensor,
    loss_mask: torch.Tensor,
    average: bool = False,
    sequence_ids: torch.Tensor | None = None,
    sequences: int | None = None,
) -> torch.Tensor:
    """Log-probability of each sequence's completion tokens, from per-token next-token NLLs.

    ``logp(y | x) = -sum_t nll[b, t] * mask[b, t]``: the sum over completion positions (prompt and padding
    excluded by the mask) of ``log softmax(logits[b, t])[labels[b, t + 1]]``. With ``average`` the sum is
    divided by the number of completion tokens: the length-normalised log-probability of IPO (Azar et al.,
    2023), SimPO (Meng et al., 2024) and ORPO (Hong et al., 2024).

    Args:
        per_token_loss / loss_mask: [B, T-1] from :func:`~lit_ft.losses.token_cross_entropy` or
            :func:`~lit_ft.losses.masked_head_cross_entropy` (labels ``-100`` outside the completion).
        sequence_ids / sequences: for sequences back to back in a row (a padding-free batch), the sequence of
            each target [1, T-1] and their number S (see :func:`per_sequence_sum`); ``None``: one a row.

    Returns:
        [B] (or [S]) float32 log-probabilities (0 for a sequence with no completion token).
    """
    logps = per_sequence_sum(-(per_token_loss.float() * loss_mask), sequence_ids, sequences)
    if not average:
        return logps
    return logps / per_sequence_sum(loss_mask.float(), sequence_ids, sequences).clamp(min=1)


def per_sequence_sum(
    values: torch.Tensor, sequence_ids: torch.Tensor | None = None, sequences: int | None = None
) -> torch.Tensor:
    """Sum ``values`` [R, T] per sequence: per row ([R]) when ``sequence_ids`` is ``None``; else per sequence
    id ([``sequences``]), where ids from ``sequences`` on (a padding run after the last sequence) are left out.
    Index-adds on the device: no host sync."""
    if sequence_ids is None:
        return values.sum(-1)
    if sequences is None:
        raise ValueError("per_sequence_sum: sequence_ids needs the number of sequences")
    ids = sequence_ids.flatten().clamp(max=sequences)
    return values.new_zeros(sequences + 1).index_add(0, ids, values.flatten())[:sequences]


def per_sequence_broadcast(values: torch.Tensor, sequence_ids: torch.Tensor) -> torch.Tensor:
    """Spread one value per sequence (``values`` [S]) onto its tokens: [R, T] like ``sequence_ids``, 0 where the id
    is S or more (a token of no sequence). The converse of :func:`per_sequence_sum`; a gather, no host sync."""
    return torch.cat([values, values.new_zeros(1)])[sequence_ids.clamp(max=len(values))]

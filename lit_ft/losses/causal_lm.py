"""Next-token cross-entropy as per-token functions, so the caller chooses the reduction."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets for next-token prediction: ``labels[:, 1:]``, shape [B, T-1] (position t predicts t+1)."""
    return labels[:, 1:]


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token next-token negative log-likelihood.

    ``loss[b, t] = -log softmax(logits[b, t])[labels[b, t + 1]]``, computed in float32, and 0 where the
    target is ``-100``.

    Args:
        logits: [B, T, V] model outputs.
        labels: [B, T] unshifted labels (``-100`` where a token carries no loss).

    Returns:
        ``(per_token_loss, loss_mask)``, both [B, T-1]; the mask is ``True`` where a target carries loss.
    """
    targets = shift_labels(labels)
    loss_mask = targets != IGNORE_INDEX
    per_token = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return per_token.view_as(targets), loss_mask


def masked_head_cross_entropy(
    hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_cross_entropy` computing the LM head only where a target carries loss.

    Equal in value and gradient to ``token_cross_entropy(head(hidden), labels)``, but the [B, T, V] logits
    are never built: only the [N, V] logits of the N loss-carrying positions. In SFT most tokens are prompt
    tokens without loss, and the head (vocabulary x hidden) is a large share of the FLOPs of a small model.

    Args:
        hidden: [B, T, H] final hidden states.
        head: the output projection (``model.get_output_embeddings()``), applied to [N, H].
        labels: [B, T] unshifted labels.
    """
    targets = shift_labels(labels)
    loss_mask = targets != IGNORE_INDEX
    per_token = hidden.new_zeros(targets.shape, dtype=torch.float32)
    logits = head(hidden[:, :-1][loss_mask]).float()
    per_token[loss_mask] = F.cross_entropy(logits, targets[loss_mask], reduction="none")
    return per_token, loss_mask

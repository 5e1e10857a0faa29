"""Next-token cross-entropy as per-token functions, so the caller chooses the reduction."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lit_ft.data.batch import IGNORE_INDEX


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


def _head_cross_entropy(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def masked_head_cross_entropy(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_cross_entropy` computing the LM head only where a target carries loss.

    Equal in value and gradient to ``token_cross_entropy(head(hidden), labels)``, but the [B, T, V] logits
    are never built: only the [N, V] logits of the N loss-carrying positions. In SFT most tokens are prompt
    tokens without loss, and the head (vocabulary x hidden) is a large share of the FLOPs of a small model.

    With ``chunk_size``, more than ``chunk_size`` loss tokens are scored in chunks whose logits are not kept for
    the backward pass (activation checkpointing per chunk): peak memory holds one [chunk_size, V] block of
    logits instead of [N, V], for one extra head forward per chunk (as in Liger's fused linear cross-entropy).

    Args:
        hidden: [B, T, H] final hidden states.
        head: the output projection (``model.get_output_embeddings()``), applied to [N, H].
        labels: [B, T] unshifted labels.
        chunk_size: loss tokens per chunk; ``None`` scores all N at once.
    """
    targets = shift_labels(labels)
    loss_mask = targets != IGNORE_INDEX
    per_token = hidden.new_zeros(targets.shape, dtype=torch.float32)
    selected, selected_targets = hidden[:, :-1][loss_mask], targets[loss_mask]
    score = partial(_head_cross_entropy, head)
    if chunk_size is None or len(selected) <= chunk_size:
        per_token[loss_mask] = score(selected, selected_targets)
    else:
        chunks = zip(selected.split(chunk_size), selected_targets.split(chunk_size))
        per_token[loss_mask] = torch.cat([checkpoint(score, h, t, use_reentrant=False) for h, t in chunks])
    return per_token, loss_mask

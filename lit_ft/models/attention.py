"""``sdpa_varlen``: attention for padding-free and packed batches that never builds a block-diagonal mask.

For a packed row (``position_ids`` restarting at 0 per example, no ``attention_mask``) transformers' ``sdpa``
path materialises a dense [B, 1, T, T] block-diagonal mask and attends over all T x T pairs, masked or not:
the CPU kernels cannot skip masked blocks. ``sdpa_varlen`` instead runs causal sdpa on each example's own
segment (what flash attention's varlen kernel does on GPU), so a row of k examples of length n costs
k * n^2 / 2 instead of (k * n)^2. Padded batches (with an ``attention_mask``) go to plain ``sdpa``.

Registered with transformers on import; select it with ``load_model(..., attn_implementation="sdpa_varlen")``.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs

SDPA_VARLEN = "sdpa_varlen"
# Flash attention's varlen arguments (cu_seq_lens_q/k, max_length_q/k), which padding-free batches carry.
VARLEN_KEYS = tuple(FlashAttentionKwargs.__annotations__)


_last: tuple[torch.Tensor | None, int, list] = (None, -1, [])  # last position_ids seen, its version, segments


def segments(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """``[start, end)`` of each run of ``position_ids`` that starts at 0, per row of a [B, T] tensor.

    Computed once per batch: every layer gets the same ``position_ids`` tensor, and the result for it is kept
    (with a reference to the tensor, so it is this very tensor, unchanged), which on GPU spares a
    device-to-host copy per layer. Inference tensors (the positions a model makes itself under
    ``torch.inference_mode``, as in validation batches without padding) have no version counter: not kept.
    """
    global _last
    inference = position_ids.is_inference()
    if not inference and _last[0] is position_ids and _last[1] == position_ids._version:
        return _last[2]
    rows = []
    for row in position_ids.tolist():
        starts = [i for i, p in enumerate(row) if p == 0] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        rows.append(list(zip(starts, starts[1:] + [len(row)])))
    if not inference:
        _last = (position_ids, position_ids._version, rows)
    return rows


@torch.compiler.disable  # a Python loop over segments: run eagerly inside compiled blocks
def sdpa_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal sdpa per example segment; ``query`` [B, H, T, D] -> output [B, T, H, D] (as ``sdpa`` returns).

    Segments come from ``position_ids`` (cached per batch); flash attention's varlen arguments, when a batch
    carries them, are not used here and not passed on."""
    for name in VARLEN_KEYS:
        kwargs.pop(name, None)
    position_ids = kwargs.pop("position_ids", None)
    if attention_mask is not None or position_ids is None or query.shape[2] != position_ids.shape[-1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = segments(position_ids)
    rows = rows * query.shape[0] if len(rows) == 1 else rows  # [1, T] positions shared by the batch
    if all(len(row) == 1 for row in rows):
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    outputs = []
    for b, row in enumerate(rows):
        parts = [
            sdpa_attention_forward(
                module, query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e], None, **kwargs
            )[0]
            for s, e in row
        ]
        outputs.append(torch.cat(parts, dim=1))
    return torch.cat(outputs, dim=0), None


def sdpa_varlen_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor | None:
    """No mask for unpadded inputs (the attention separates segments itself); sdpa's mask for padded ones."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(SDPA_VARLEN, sdpa_varlen_attention)
if SDPA_VARLEN not in ALL_MASK_ATTENTION_FUNCTIONS:
    AttentionMaskInterface.register(SDPA_VARLEN, sdpa_varlen_mask)

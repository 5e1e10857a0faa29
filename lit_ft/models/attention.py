"""``sdpa_varlen``: attention for padding-free and packed batches that never builds a block-diagonal mask.

For a packed row (``position_ids`` restarting at 0 per example, no ``attention_mask``) transformers' ``sdpa``
path materialises a dense [B, 1, T, T] block-diagonal mask and attends over all T x T pairs, masked or not:
the CPU kernels cannot skip masked blocks. ``sdpa_varlen`` instead runs causal sdpa on each example's own
segment (what flash attention's varlen kernel does on GPU), so a row of k examples of length n costs
k * n^2 / 2 instead of (k * n)^2. Padded batches (with an ``attention_mask``) go to plain ``sdpa``.

Branches (the shared-prompt layout of preference pairs, ``data.shared_prompt``): inside an example, a run of
``position_ids`` that starts at ``p > 0`` without continuing the run before it is a branch that follows the
example's first ``p`` tokens (its trunk, here the prompt) instead: it attends to those ``p`` tokens and causally to
itself, never to the tokens between them and the branch (the chosen answer). Positions are all it needs, so a row
``prompt + chosen + rejected`` with the rejected answer's positions continuing from the prompt's end is attended
exactly as ``prompt + chosen`` and ``prompt + rejected`` would be on their own. Plain ``sdpa`` and flash attention
cannot express this: they split rows where positions restart (sdpa: where they stop increasing by one).

Registered with transformers on import; select it with ``load_model(..., attn_implementation="sdpa_varlen")``.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs

SDPA_VARLEN = "sdpa_varlen"
# Attention backends that keep a shared-prompt sequence's branches apart (the rejected answer off the chosen one, a
# completion off its group's others): only sdpa_varlen reads the branches from the positions. sdpa, eager and flex
# would cut a branch off its prompt (transformers splits rows where positions stop increasing by one); flash
# attention's varlen kernel cannot express a branch at all.
SHARED_PROMPT_ATTENTION = (SDPA_VARLEN,)
# Flash attention's varlen arguments (cu_seq_lens_q/k, max_length_q/k), which padding-free batches carry.
VARLEN_KEYS = tuple(FlashAttentionKwargs.__annotations__)


Segment = tuple[int, int, int, int]  # start, end, then the [start, end) of the trunk it follows (empty: none)
_last: tuple[torch.Tensor | None, int, list] = (None, -1, [])  # last position_ids seen, its version, segments


def row_segments(positions: list[int]) -> list[Segment]:
    """The segments of one row of ``position_ids``: a run that starts at 0 (or the row's start) is an example's
    trunk; a run that starts at ``p > 0`` without continuing the run before it is a branch following the first
    ``p`` tokens of its example's trunk (``(start, end, trunk_start, trunk_start + p)``)."""
    cuts = [i for i in range(1, len(positions)) if positions[i] != positions[i - 1] + 1]
    out: list[Segment] = []
    trunk = (0, 0)
    for start, end in zip([0, *cuts], [*cuts, len(positions)]):
        first = positions[start]
        if first == 0 or start == 0:
            trunk = (start, end)
            out.append((start, end, start, start))
            continue
        if first > trunk[1] - trunk[0]:
            raise ValueError(
                f"position_ids: a branch at token {start} continues from position {first}, past the end of its "
                f"example's first run of {trunk[1] - trunk[0]} tokens (positions must restart at 0 per example, or "
                "continue the example's first run)"
            )
        out.append((start, end, trunk[0], trunk[0] + first))
    return out


def segments(position_ids: torch.Tensor) -> list[list[Segment]]:
    """The :func:`row_segments` of each row of a [B, T] ``position_ids`` tensor.

    Computed once per batch: every layer gets the same ``position_ids`` tensor, and the result for it is kept
    (with a reference to the tensor, so it is this very tensor, unchanged), which on GPU spares a
    device-to-host copy per layer. Inference tensors (the positions a model makes itself under
    ``torch.inference_mode``, as in validation batches without padding) have no version counter: not kept.
    """
    global _last
    inference = position_ids.is_inference()
    if not inference and _last[0] is position_ids and _last[1] == position_ids._version:
        return _last[2]
    rows = [row_segments(row) for row in position_ids.tolist()]
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

    A branch of ``n`` tokens following ``p`` trunk tokens attends to their keys and its own, ``[p + n]``, under the
    causal mask aligned to its end (``tril(ones(n, p + n), p)``).

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
    # Pieces by split, not slicing: split's backward concatenates the pieces' gradients, where each slice's would
    # fill a zero tensor of the whole row (3 tensors x segments x layers per step).
    outputs = []
    for row, *tensors in zip(rows, query.split(1), key.split(1), value.split(1)):
        sizes = [e - s for s, e, _, _ in row]
        queries, keys, values = (tensor.split(sizes, dim=2) for tensor in tensors)
        index_at = {s: i for i, (s, _, _, _) in enumerate(row)}
        parts = []
        for i, (s, e, ts, te) in enumerate(row):
            own_keys, own_values, mask = keys[i], values[i], None
            if te > ts:  # a branch: the first te - ts keys of its trunk (the segment starting at ts), then its own
                trunk = index_at[ts]
                own_keys = torch.cat([keys[trunk][:, :, : te - ts], own_keys], dim=2)
                own_values = torch.cat([values[trunk][:, :, : te - ts], own_values], dim=2)
                mask = torch.ones(e - s, te - ts + e - s, dtype=torch.bool, device=query.device).tril(te - ts)
            parts.append(sdpa_attention_forward(module, queries[i], own_keys, own_values, mask, **kwargs)[0])
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

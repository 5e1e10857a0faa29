"""Pure loss functions on tensors: per-token or per-example values; modules choose the reduction."""

from lit_ft.losses.causal_lm import IGNORE_INDEX, masked_head_cross_entropy, shift_labels, token_cross_entropy
from lit_ft.losses.regularization import l2_sp_penalty

__all__ = ["IGNORE_INDEX", "l2_sp_penalty", "masked_head_cross_entropy", "shift_labels", "token_cross_entropy"]

"""Pure loss functions on tensors: per-token or per-example values; modules choose the reduction."""

from lit_ft.losses.causal_lm import IGNORE_INDEX, masked_head_cross_entropy, shift_labels, token_cross_entropy

__all__ = ["IGNORE_INDEX", "masked_head_cross_entropy", "shift_labels", "token_cross_entropy"]

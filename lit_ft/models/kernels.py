"""Fused GPU kernels for training: Liger's Triton kernels for RMSNorm, SwiGLU and rotary embeddings."""

from __future__ import annotations

import importlib.util

import torch
from transformers import PreTrainedModel


def apply_liger_kernels(model: PreTrainedModel) -> PreTrainedModel:
    """Swap the model's RMSNorm, SwiGLU MLP and RoPE for Liger's fused kernels (Hsu et al., 2024), in place.

    Each kernel fuses a chain of element-wise ops into one pass over memory: less activation memory and
    fewer launches, the same function up to float rounding. Liger's own fused linear cross-entropy is left
    off: lit-ft computes the LM head only on loss-carrying tokens (:func:`masked_head_cross_entropy`).
    Triton kernels need a CUDA GPU; this raises on other machines rather than silently doing nothing.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "Liger kernels are Triton GPU kernels and this machine has no CUDA GPU: set liger_kernels=false"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise RuntimeError("liger_kernels=true needs the liger-kernel package: pip install 'lit-ft[gpu]'")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(
        model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False
    )
    return model

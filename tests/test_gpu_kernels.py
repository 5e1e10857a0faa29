"""GPU code paths: flash-attention varlen for padding-free batches, Liger kernels, bf16 on CUDA.

The GPU tests run only on a CUDA machine with the ``gpu`` extra installed; on CPU only the clear refusal
of ``liger_kernels=true`` is tested.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from lit_ft.data import Collator
from lit_ft.losses import token_cross_entropy
from lit_ft.models import tiny_llama
from lit_ft.models.attention import VARLEN_KEYS
from lit_ft.models.kernels import apply_liger_kernels
from tests.test_batching import random_examples

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def batch_loss(model, batch):
    """Mean token loss; a padding-free batch's varlen arguments go in too (flash attention uses them as given)."""
    batch = move_data_to_device(batch, "cuda" if CUDA else "cpu")
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", *VARLEN_KEYS) if k in batch}
    per_token, mask = token_cross_entropy(model(**inputs, use_cache=False).logits, batch["labels"])
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_liger_kernels_refuse_clearly_without_cuda(tokenizer):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        apply_liger_kernels(tiny_llama(tokenizer))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="needs flash-attn")
def test_flash_attention_varlen_padding_free_equals_padded(tokenizer):
    model = tiny_llama(tokenizer, attn_implementation="flash_attention_2").cuda().to(torch.bfloat16)
    examples = random_examples([37, 120, 64, 9], seed=2)
    padded = batch_loss(model, Collator(tokenizer.pad_token_id)(examples))
    flat = batch_loss(model, Collator(tokenizer.pad_token_id, padding_free=True)(examples))
    torch.testing.assert_close(flat.float(), padded.float(), atol=2e-2, rtol=1e-2)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="needs liger-kernel")
def test_liger_kernels_keep_the_loss_and_gradients(tokenizer):
    model = tiny_llama(tokenizer).cuda()
    fused = apply_liger_kernels(copy.deepcopy(model))
    batch = Collator(tokenizer.pad_token_id)(random_examples([30, 17, 25], seed=6))
    plain_loss, fused_loss = batch_loss(model, batch), batch_loss(fused, batch)
    plain_loss.backward()
    fused_loss.backward()
    torch.testing.assert_close(fused_loss, plain_loss, atol=1e-4, rtol=1e-4)
    for a, b in zip(fused.parameters(), model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_bf16_autocast_on_cuda_matches_fp32(tokenizer):
    model = tiny_llama(tokenizer).cuda()
    batch = Collator(tokenizer.pad_token_id, padding_free=True)(random_examples([30, 17, 25], seed=7))
    fp32 = batch_loss(model, batch)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = batch_loss(model, batch)
    assert bf16.item() == pytest.approx(fp32.item(), rel=1e-2)

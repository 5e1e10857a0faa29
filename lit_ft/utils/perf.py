"""Training FLOPs per token, the device's peak FLOP/s (datasheet or measured), and peak memory: the inputs of
throughput and MFU."""

from __future__ import annotations

import resource
import sys
import time

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch import nn
from transformers.pytorch_utils import Conv1D

from lit_ft.models.layers import decoder_layers


def _matmul_weights(module: nn.Module) -> list[nn.Parameter]:
    """Weights of the linear maps in ``module`` (each once, so a tied LM head counts once)."""
    seen: dict[int, nn.Parameter] = {}
    for child in module.modules():
        if isinstance(child, (nn.Linear, Conv1D)):
            seen[id(child.weight)] = child.weight
    return list(seen.values())


def _numel(weights: list[nn.Parameter], trainable_only: bool = False) -> int:
    return sum(w.numel() for w in weights if w.requires_grad or not trainable_only)


def backprop_weights(model: nn.Module) -> int:
    """Matmul weights that activation gradients flow through: all of them from the lowest decoder layer that
    trains upwards (everything when the input embedding trains, e.g. a tied LM head)."""
    everything = _numel(_matmul_weights(model))
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and any(p.requires_grad for p in embeddings.parameters()):
        return everything
    try:
        layers = decoder_layers(model)
    except ValueError:  # not a decoder we can read: assume gradients reach the bottom
        return everything
    first = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), len(layers))
    below = sum(_numel(_matmul_weights(layer)) for layer in layers[:first])
    return everything - below


def training_flops_per_token(model: nn.Module) -> float:
    """FLOPs of one training token: ``2·N + 2·N_backprop + 2·N_trainable``.

    With N the weights of all linear maps (the LM head included, the embedding lookup not), a token costs
    ``2·N`` in the forward pass, ``2·N_backprop`` to propagate activation gradients through the linear maps
    at or above the lowest trainable layer, and ``2·N_trainable`` for the weight gradients. Full fine-tuning
    gives the usual ``6·N``; LoRA about ``4·N`` (the frozen weights pass gradients on but get none);
    training the top k layers only ``2·N`` plus ``4·N`` of those layers and the head. Attention's
    sequence-length term (``12·layers·hidden·T`` per token, a few percent at T of a few hundred) and
    activation-checkpointing recomputation are not counted (MFU, not hardware FLOP utilisation). The head's
    share is :func:`head_flops_per_token`.
    """
    weights = _matmul_weights(model)
    return 2.0 * _numel(weights) + 2.0 * backprop_weights(model) + 2.0 * _numel(weights, trainable_only=True)


def head_flops_per_token(model: nn.Module) -> float:
    """The LM head's part of :func:`training_flops_per_token`: ``2·N_head`` forward, ``2·N_head`` for the
    gradient of the hidden states, and ``2·N_head`` more when the head trains. 0 for a model without an output
    embedding (a reward model, whose small score head stays in the rest). A module that runs the head only on
    loss tokens does this share of the FLOPs on those tokens only (see the ``Throughput`` callback)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft wrapper
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return 0.0
    return (6.0 if head.weight.requires_grad else 4.0) * head.weight.numel()


def compute_dtype(precision: str, parameter_dtype: torch.dtype) -> torch.dtype:
    """The dtype matmuls run in under a Lightning ``precision`` setting."""
    if "bf16" in precision:
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return parameter_dtype


def measure_matmul_flops(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, seconds: float = 1.0
) -> float:
    """Achieved FLOP/s of square ``size`` matmuls on ``device`` (after one warm-up), over about ``seconds``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b
    sync()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync()
    return 2.0 * size**3 * runs / (time.perf_counter() - start)


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The per-device peak FLOP/s that MFU divides by, and what it is (``mfu_basis`` in the summary).

    On CUDA the datasheet figure Lightning's ``get_available_flops`` lists for the GPU and dtype, so MFU compares
    with published numbers (fp32 matmuls count at the TF32 peak on Ampere and later unless
    ``torch.set_float32_matmul_precision("highest")``, as Lightning does). Elsewhere, and for a GPU Lightning does
    not list, a matmul in ``dtype`` measured once (about a second): a CPU has no comparable datasheet figure.
    """
    name = DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    if device.type != "cuda":
        return measure_matmul_flops(device, dtype), f"measured matmul peak on this CPU ({name})"
    gpu = torch.cuda.get_device_name(device)
    datasheet = get_available_flops(device, dtype)
    if datasheet:
        tf32 = (
            dtype == torch.float32
            and torch.get_float32_matmul_precision() != "highest"
            and torch.cuda.get_device_capability(device) >= (8, 0)
        )
        return float(datasheet), f"datasheet peak ({gpu}, {'tf32' if tf32 else name})"
    return measure_matmul_flops(device, dtype), f"measured matmul peak on {gpu} ({name}; no datasheet figure known)"


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory tensors took on ``device``; otherwise the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux

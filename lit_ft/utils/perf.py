"""The device's peak FLOP/s (datasheet or measured) and peak memory: with a model's training FLOPs per token
(:mod:`lit_ft.models.flops`), the inputs of throughput and MFU."""

from __future__ import annotations

import resource
import sys
import time

import torch
from lightning.fabric.utilities.throughput import get_available_flops


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

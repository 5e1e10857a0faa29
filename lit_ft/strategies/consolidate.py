"""Gather the full weights of a model that a strategy has sharded (FSDP2, FSDP1, DeepSpeed ZeRO-3)."""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.distributed.tensor import DTensor

_WRAPPER_PARTS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def unwrapped_name(name: str) -> str:
    """A parameter name without the parts that FSDP, activation-checkpointing and ``torch.compile`` wrappers add
    (state dicts use the unwrapped names)."""
    return _WRAPPER_PARTS.sub("", name)


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded (FSDP2 ``DTensor``) tensor; any other tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def reshard(root: nn.Module) -> None:
    """Register FSDP2's parameter shards again where gathered weights stand in for them (no communication).

    After a forward FSDP2 keeps the weights of the root module (and of layers set not to reshard) gathered, as
    plain tensors in place of the ``DTensor`` shards, until the backward; a forward without one (validation,
    generation) leaves them so. Call this before reading or writing the parameters as shards: the shards are the
    weights the optimizer updates, and the next forward gathers them again.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def is_sharded(root: nn.Module) -> bool:
    """Whether some parameters of ``root`` live in pieces across ranks (so no rank can save it alone)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    if getattr(root, "zero_optimization_partition_weights", lambda: False)():  # DeepSpeed ZeRO-3 engine
        return True
    return any(isinstance(p, DTensor) for p in root.parameters()) or any(
        isinstance(m, FullyShardedDataParallel) for m in root.modules()
    )


def full_state_dict(root: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of ``root`` (what the strategy trains: ``trainer.model``), on rank 0's CPU.

    A collective: every rank must call it; ranks other than 0 get an empty dict. Keys are those of the
    unwrapped module (no ``_fsdp_wrapped_module.``/``_checkpoint_wrapped_module.`` parts). Under DeepSpeed ZeRO-3
    the engine gathers one layer at a time, in the training dtype.
    """
    if hasattr(root, "_zero3_consolidated_16bit_state_dict"):
        return root._zero3_consolidated_16bit_state_dict() or {}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

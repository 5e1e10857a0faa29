"""Helpers for models that a strategy shards across ranks (FSDP2 ``DTensor`` parameters, FSDP1 wrappers, DeepSpeed
ZeRO-3): parameter names without wrapper parts, this rank's shard, gathering a full state dict, and rank-local
copies of the trainable weights (what early stopping keeps) cut into shards or gathered whole."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from lit_ft.utils.protocols import TrainedModule

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


@contextmanager
def root_weights_gathered(model: nn.Module) -> Iterator[None]:
    """FSDP2: the root module's own weights (embeddings, LM head) gathered for the duration, then registered as
    shards again (:func:`reshard`); any other model as it is. Generation needs it with a peft model: peft's
    ``generate`` calls the inner model's forward, past the root's hook that would gather them."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        reshard(model)


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


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters that train (all of them for full fine-tuning, the adapters for LoRA); of a
    sharded (FSDP2 ``DTensor``) parameter, this rank's shard.

    A lit-ft module names them when it builds the model (``trainable_names``): parameters that a callback freezes
    for a while (gradual unfreezing) are copied too, so a restore never mixes weights of two steps. Any other
    module: the parameters that require gradients now."""
    reshard(module)
    names = module.trainable_names if isinstance(module, TrainedModule) else None

    def trains(name: str, parameter: torch.nn.Parameter) -> bool:
        return unwrapped_name(name) in names if names else parameter.requires_grad

    return {
        name: local_part(p.detach()).to("cpu", copy=True) for name, p in module.named_parameters() if trains(name, p)
    }


@torch.no_grad()
def load_trainable_state(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy :func:`trainable_state`'s ``state`` back into the parameters (the next forward of a sharded model
    gathers them anew)."""
    reshard(module)
    parameters = dict(module.named_parameters())
    for name, value in state.items():
        local_part(parameters[name]).copy_(value)


@torch.no_grad()
def whole_tensors(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the shards of sharded parameters gathered into whole tensors on CPU (a collective: every
    rank calls it)."""
    reshard(module)
    parameters = dict(module.named_parameters())
    whole = {}
    for name, value in state.items():
        p = parameters[name]
        if isinstance(p, DTensor):
            shard = value.to(local_part(p).device)
            value = DTensor.from_local(shard, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
            value = value.full_tensor().cpu()
        whole[name] = value
    return whole


def own_shards(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each whole tensor of a sharded parameter cut to this rank's shard (no communication)."""
    reshard(module)
    parameters = dict(module.named_parameters())
    shards = {}
    for name, value in state.items():
        p = parameters[name]
        if isinstance(p, DTensor) and value.shape == p.shape:
            value = distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None).to_local().cpu()
        shards[name] = value
    return shards


def gathered_objects(value: object) -> list[object]:
    """Every rank's ``value``, in rank order (a collective: every rank calls it); ``[value]`` in one process.
    Picklable objects of any shape, such as each rank's own rollouts, which no tensor gather takes."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values: list[object] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values

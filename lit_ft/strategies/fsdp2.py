"""FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's ``ModelParallelStrategy``.

The module builds its model(s) in ``configure_model`` exactly as on one device; this strategy then shards them:
every decoder layer (found from the model, see :func:`lit_ft.models.decoder_layer_classes`) becomes one FSDP
unit, then each model root (embeddings, final norm, head). So SFT, LoRA, reward and DPO modules (policy and
reference) need no parallelism code of their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard
from torch.optim import Optimizer
from torchmetrics import Metric

from lit_ft.models.layers import decoder_layer_classes
from lit_ft.strategies.launch import HydraSafeLaunch
from lit_ft.utils.distributed import unwrapped_name
from lit_ft.utils.io import replace_directory
from lit_ft.utils.lightning_compat import (
    METADATA_FILENAME,
    data_parallel_size,
    saves_distributed_checkpoint,
    set_data_parallel_size,
)


def _dtype(name: str | None) -> torch.dtype | None:
    return getattr(torch, name) if name else None


def shardable_models(module: nn.Module) -> list[nn.Module]:
    """The children of a LightningModule that hold parameters (its model, a reference model, a value head...)."""
    return [c for c in module.children() if not isinstance(c, Metric) and next(c.parameters(), None) is not None]


def checkpoint_layers(model: nn.Module, layer_classes: tuple[type[nn.Module], ...]) -> None:
    """Wrap every decoder layer in ``checkpoint_wrapper`` (non-reentrant): its activations are recomputed in
    backward instead of kept. State-dict keys are unchanged (the wrapper strips its prefix)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, layer_classes):
                parent.register_module(name, checkpoint_wrapper(child))


def shard_model(
    model: nn.Module,
    mesh: DeviceMesh,
    mp_policy: MixedPrecisionPolicy,
    offload_policy: OffloadPolicy,
    reshard_after_forward: bool,
    activation_checkpointing: bool,
) -> None:
    """``fully_shard`` each decoder layer of ``model``, then ``model`` itself; a no-op on a sharded model. A small
    module with no list of layers (online RL's value head) is one unit, the root."""
    if isinstance(model, FSDPModule):
        return
    has_layers = any(isinstance(m, nn.ModuleList) for m in model.modules())
    layer_classes = tuple(decoder_layer_classes(model)) if has_layers else ()
    if activation_checkpointing:
        checkpoint_layers(model, layer_classes)
    options = {"mesh": mesh, "mp_policy": mp_policy, "offload_policy": offload_policy}
    layers = [m for m in model.modules() if isinstance(m, layer_classes)]
    for i, layer in enumerate(layers):
        # backward starts with the last layer: resharding it after forward would only gather it again at once
        fully_shard(layer, reshard_after_forward=reshard_after_forward and i < len(layers) - 1, **options)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **options)  # torch keeps the root gathered


def load_slim_checkpoint(
    module: nn.Module, optimizers: list[Optimizer], path: Path, weights_only: bool | None = None
) -> dict[str, Any]:
    """Load a sharded checkpoint that holds only the trainable weights (adapter and frozen-backbone runs save
    no frozen weights; those keep their pretrained values), the optimizer states, and return its metadata."""
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    saved = FileSystemReader(path).read_metadata().state_dict_metadata  # flat keys: "state_dict.<name>", ...
    trainable = {unwrapped_name(n) for n, p in module.named_parameters() if p.requires_grad}
    missing = sorted(n for n in trainable if f"state_dict.{n}" not in saved)
    if missing:
        raise KeyError(f"{path} lacks trainable weights: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    model_state = {k: v for k, v in get_model_state_dict(module).items() if f"state_dict.{k}" in saved}
    optimizer_states = {f"optimizer_{i}": get_optimizer_state_dict(module, o) for i, o in enumerate(optimizers)}
    load({"state_dict": model_state, **optimizer_states}, checkpoint_id=path)
    set_model_state_dict(module, model_state, options=StateDictOptions(strict=False))
    for i, optimizer in enumerate(optimizers):
        set_optimizer_state_dict(module, optimizer, optim_state_dict=optimizer_states[f"optimizer_{i}"])
    return torch.load(path / METADATA_FILENAME, weights_only=weights_only)  # Lightning's loops, callbacks...


class FSDP2Strategy(HydraSafeLaunch, ModelParallelStrategy):
    """Fully sharded data parallel with FSDP2: parameters, gradients and optimizer state split over all ranks.

    Parameters become ``DTensor`` shards (dim 0) over the data-parallel mesh; before a layer runs its full
    weights are all-gathered, and gradients are reduce-scattered *averaged* over ranks, which the module's
    token-mean normalisation expects. Checkpoints are sharded (one file per rank, ``torch.distributed.checkpoint``)
    unless ``save_distributed_checkpoint=False``; the final model is gathered by ``FineTuneModule.export``.

    Args:
        data_parallel_size: ranks that shard the model; ``"auto"`` is all of them (nodes x devices).
        param_dtype: dtype the gathered parameters compute in (``"bfloat16"``); ``None`` keeps the stored dtype.
            Use it with ``trainer.precision=32-true``: fp32 sharded master weights, bf16 compute.
        reduce_dtype: dtype of the gradient reduce-scatter (``"float32"`` keeps it exact under bf16 compute).
        reshard_after_forward: free each layer's gathered weights after its forward and gather them again in
            backward (least memory, ZeRO-3 like), or keep them until backward (one all-gather fewer, ZeRO-2 like).
        activation_checkpointing: recompute each decoder layer's activations in backward.
        cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory (GPU only).
        save_distributed_checkpoint: sharded checkpoints (default); ``False`` gathers a full one on rank 0.
        kwargs: passed to Lightning's ``ModelParallelStrategy`` (``process_group_backend``, ``timeout``).
    """

    def __init__(
        self,
        data_parallel_size: int | Literal["auto"] = "auto",
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            data_parallel_size=data_parallel_size,
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self.mp_policy = MixedPrecisionPolicy(param_dtype=_dtype(param_dtype), reduce_dtype=_dtype(reduce_dtype))
        self.offload_policy = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing

    def setup_environment(self) -> None:
        if data_parallel_size(self) == "auto":  # Lightning's "auto" shards within a node only (for 2D parallelism)
            set_data_parallel_size(self, self.num_nodes * self.num_processes)
        super().setup_environment()

    def setup(self, trainer: L.Trainer) -> None:
        # configure_model has built the model(s) by now (Trainer calls it before strategy.setup)
        for model in shardable_models(self.lightning_module):
            shard_model(
                model,
                self.device_mesh["data_parallel"],
                self.mp_policy,
                self.offload_policy,
                self.reshard_after_forward,
                self.activation_checkpointing,
            )
        super().setup(trainer)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | Path, storage_options: Any = None) -> None:
        """Write a sharded checkpoint into a sibling folder, and rename it into place once every rank has written
        its shard: a kill never leaves a half-written ``last.ckpt`` (``AtomicCheckpointIO`` does so for files)."""
        if not saves_distributed_checkpoint(self):
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(filepath))
        partial = path.with_name(f".{path.name}.partial")
        if self.is_global_zero:
            shutil.rmtree(partial, ignore_errors=True)  # a leftover of a killed write
        self.barrier()
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier()
        if self.is_global_zero:
            replace_directory(partial, path)
        self.barrier()

    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(self.broadcast(checkpoint_path))
        if self.lightning_module.strict_loading or not path.is_dir():
            return super().load_checkpoint(path, weights_only)
        return load_slim_checkpoint(self.model, self.optimizers, path, weights_only)

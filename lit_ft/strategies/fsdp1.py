"""FSDP (the first version, ``FullyShardedDataParallel``) through Lightning's ``FSDPStrategy``, with its wrapping
and activation-checkpointing policies on the model's own decoder-layer class. CUDA only (torch's FSDP1 needs a
GPU); FSDP2 (:class:`lit_ft.strategies.FSDP2Strategy`) is its successor and also runs on CPU."""

from __future__ import annotations

from typing import Any, Literal

from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lit_ft.models.layers import decoder_layer_classes
from lit_ft.strategies.launch import HydraSafeLaunch
from lit_ft.utils.lightning_compat import FSDPSetupHook, fsdp_state_dict_type, set_activation_checkpointing_policy


class FSDP1Strategy(HydraSafeLaunch, FSDPSetupHook):
    """Lightning's ``FSDPStrategy`` whose policies name the decoder-layer class found in the built model.

    Lightning takes the policies as sets of classes when the strategy is created, before the model exists; here
    they are resolved in ``before_wrap``, after ``configure_model`` built the model and before FSDP wraps it.

    Args:
        wrap_decoder_layers: each decoder layer is its own FSDP unit (``auto_wrap_policy``), so only one layer's
            full weights are gathered at a time.
        activation_checkpointing: recompute each decoder layer's activations in backward.
        state_dict_type: ``"full"`` (checkpoints gathered to one file on rank 0) or ``"sharded"`` (a folder with
            a file per rank: fast, no gather; not for adapter and frozen-backbone runs, whose slim checkpoints it
            cannot resume).
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2), ``HYBRID_SHARD`` (shard within a
            node, replicate across nodes), ``NO_SHARD``.
        limit_all_gathers: rate-limit parameter all-gathers (caps memory spikes).
        kwargs: passed to Lightning's ``FSDPStrategy`` (``cpu_offload``, ``mixed_precision``, ...).
    """

    def __init__(
        self,
        wrap_decoder_layers: bool = True,
        activation_checkpointing: bool = False,
        state_dict_type: Literal["full", "sharded"] = "full",
        sharding_strategy: str = "FULL_SHARD",
        limit_all_gathers: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            state_dict_type=state_dict_type,
            sharding_strategy=sharding_strategy,
            limit_all_gathers=limit_all_gathers,
            **kwargs,
        )
        self.wrap_decoder_layers = wrap_decoder_layers
        self.activation_checkpointing = activation_checkpointing

    def prepare(self, module: nn.Module) -> None:
        """Point the wrapping and checkpointing policies at the decoder-layer classes of the built ``module``."""
        if fsdp_state_dict_type(self) == "sharded" and not getattr(module, "strict_loading", True):
            raise ValueError(
                "strategy=fsdp1 with state_dict_type=sharded cannot resume the slim checkpoints of adapter and "
                "frozen-backbone runs (they hold only the trainable weights); use strategy.state_dict_type=full, "
                "or strategy=fsdp (FSDP2), which resumes them."
            )
        policy = ModuleWrapPolicy(decoder_layer_classes(module))
        if self.wrap_decoder_layers:
            self.kwargs["auto_wrap_policy"] = policy
        if self.activation_checkpointing:
            set_activation_checkpointing_policy(self, policy)

    def before_wrap(self, model: nn.Module) -> None:
        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):  # not wrapped by an earlier stage
            self.prepare(model)

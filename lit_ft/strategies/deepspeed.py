"""DeepSpeed ZeRO through Lightning's ``DeepSpeedStrategy``, its JSON config generated from the run's own settings.

The config is never written by hand: :func:`deepspeed_config` builds it from the ZeRO stage and offload choices
and from the Trainer (precision, gradient clipping, accumulation) and data (micro batch) settings, when the
run starts, so it cannot drift from them. CUDA only (Lightning refuses DeepSpeed on other accelerators); needs
``pip install 'lit-ft[deepspeed]'``.

What differs from DDP/FSDP: the engine owns accumulation, clipping and the optimizer step, and its gradients
live in partitioned buffers, so the module normalises the loss before backward instead of rescaling gradients
after it (the DeepSpeed route of ``FineTuneModule.normalize_gradients``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from lit_ft.strategies.launch import HydraSafeLaunch
from lit_ft.utils.lightning_compat import DeepSpeedConfigHook

_HALF = {"bf16-mixed": "bf16", "bf16-true": "bf16", "16-mixed": "fp16", "16-true": "fp16", "32-true": None}


def deepspeed_config(
    stage: int,
    precision: str,
    micro_batch_size: int,
    accumulate_grad_batches: int = 1,
    gradient_clip_val: float | None = None,
    offload_optimizer: bool = False,
    offload_parameters: bool = False,
    world_size: int | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for a run (keys as in https://www.deepspeed.ai/docs/config-json/).

    Args:
        stage: ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters.
        precision: the Trainer's precision; ``bf16-*`` enables DeepSpeed's bf16 mode, ``16-*`` fp16 with dynamic
            loss scaling, ``32-true`` neither. DeepSpeed keeps fp32 master weights in the optimizer either way.
        micro_batch_size: examples per rank per forward (the data's ``batch_size``).
        accumulate_grad_batches: micro-batches per optimizer step.
        gradient_clip_val: global gradient-norm clip (``None`` or 0: no clipping).
        offload_optimizer: optimizer state and step on the CPU (ZeRO-Offload; pair it with ``DeepSpeedCPUAdam``).
        offload_parameters: parameters in CPU memory between uses (ZeRO-Infinity; stage 3 only).
        world_size: number of ranks; when given, ``train_batch_size`` (the global batch) is filled in.
    """
    if stage not in (1, 2, 3):
        raise ValueError(f"ZeRO stage must be 1, 2 or 3, got {stage}")
    if offload_parameters and stage != 3:
        raise ValueError("offload_parameters needs ZeRO stage 3 (only stage 3 partitions the parameters)")
    if precision not in _HALF:
        raise ValueError(f"precision {precision!r} is not supported with DeepSpeed (one of {', '.join(_HALF)})")
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # lets the engine save a whole model
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_parameters:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    half = _HALF[precision]
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulate_grad_batches,
        "gradient_clipping": float(gradient_clip_val or 0.0),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # the optimizer comes from the module's config (torch AdamW)
        "bf16": {"enabled": half == "bf16"},
        "fp16": {"enabled": half == "fp16"},
    }
    if half == "fp16":
        config["fp16"].update(
            loss_scale=0, initial_scale_power=16, loss_scale_window=1000, hysteresis=2, min_loss_scale=1
        )
    if world_size is not None:
        config["train_batch_size"] = micro_batch_size * accumulate_grad_batches * world_size
    return config


class DeepSpeedStrategy(HydraSafeLaunch, DeepSpeedConfigHook):
    """Lightning's ``DeepSpeedStrategy`` with the config from :func:`deepspeed_config`, made at setup.

    Args:
        stage, offload_optimizer, offload_parameters: see :func:`deepspeed_config`.
        micro_batch_size: the data's batch size (``None``: read from the training dataloader).
        kwargs: passed to Lightning's ``DeepSpeedStrategy`` (``logging_level``, ``reduce_bucket_size``,
            ``nvme_path``, ``config``...). The config Lightning builds from them is kept; the keys
            :func:`deepspeed_config` sets from the run (stage, precision, batch sizes, clipping, offload) win.
    """

    def __init__(
        self,
        stage: int = 2,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        micro_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            stage=stage, offload_optimizer=offload_optimizer, offload_parameters=offload_parameters, **kwargs
        )
        self.stage, self.micro_batch_size = stage, micro_batch_size
        self.offload_optimizer, self.offload_parameters = offload_optimizer, offload_parameters

    def fill_config(self) -> None:
        trainer = self.lightning_module.trainer
        from_run = deepspeed_config(
            stage=self.stage,
            precision=self.precision_plugin.precision,
            micro_batch_size=self.micro_batch_size or self.auto_micro_batch_size(),
            accumulate_grad_batches=trainer.accumulate_grad_batches,
            gradient_clip_val=trainer.gradient_clip_val,
            offload_optimizer=self.offload_optimizer,
            offload_parameters=self.offload_parameters,
            world_size=self.world_size,
        )
        # nested sections merged key by key: what the keyword arguments set there stays beside the run's values
        self.config = OmegaConf.to_container(OmegaConf.merge(self.config or {}, from_run))

"""Combinations of options that are each valid but do not work together, refused with what to change.

Only rules that span objects live here (module vs data, packing vs attention, ZeRO-3 vs callbacks, quantisation vs
adapter, a CUDA-only choice vs the trainer and machine). A rule about one object's own options lives in that
object's constructor (``DPOModule``'s loss options, ``FineTuneModule``'s ``freeze`` beside ``adapter``), which
``lit_ft.run`` calls before it writes or loads anything, so it fails as early as these checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.util import find_spec

import torch
from omegaconf import DictConfig, OmegaConf

from lit_ft.models.attention import SHARED_PROMPT_ATTENTION
from lit_ft.modules.rl import ADVANTAGES  # the loss types whose rollouts can share prompts
from lit_ft.resolvers import uses_cuda

log = logging.getLogger(__name__)

# Attention backends for which transformers builds the per-example mask of a packed batch from its restarting
# position_ids (masking_utils: block-diagonal causal mask for sdpa/eager/flex, varlen boundaries for flash).
# lit-ft's sdpa_varlen (lit_ft/models/attention.py) runs sdpa on each example's segment of the row.
# Any other backend (a hub kernel, paged attention, modelling code of its own) would attend across examples.
PACKING_SAFE_ATTENTION = (
    "sdpa",
    "sdpa_varlen",
    "eager",
    "flex_attention",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
)


Check = Callable[[DictConfig], list[str]]


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


def _cuda_run(cfg: DictConfig) -> bool:
    return uses_cuda(_get(cfg, "trainer.accelerator", "auto"))


def check_cuda_only(cfg: DictConfig) -> list[str]:
    """GPU-only choices on a machine or trainer without CUDA, refused before data and model are built (Lightning
    and torch would otherwise fail deep inside, or name no GPU at all)."""
    from lit_ft.strategies import DeepSpeedStrategy, FSDP1Strategy

    errors = []
    accelerator = str(_get(cfg, "trainer.accelerator", "auto"))
    has_gpu = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not has_gpu:
        errors.append(
            f"trainer.accelerator={accelerator} (trainer=gpu) needs a CUDA GPU, and this machine has none: "
            "use trainer=cpu, or run on a GPU machine."
        )
    strategy = _target_class(cfg, "strategy")
    if strategy is not None and issubclass(strategy, (FSDP1Strategy, DeepSpeedStrategy)) and not _cuda_run(cfg):
        errors.append(
            f"the strategy {_get(cfg, 'strategy._target_')} runs on CUDA GPUs only: it needs trainer=gpu on a machine "
            "with a CUDA GPU. Without one, use strategy=fsdp (FSDP2) or strategy=ddp, which also run on CPU."
        )
    return errors


def check_packing(cfg: DictConfig) -> list[str]:
    """Packed and padding-free batches put several examples in one row, kept apart only by their position ids.
    Only training batches are built so: eval.py's configs (they have a ``mode``) are not checked."""
    if _get(cfg, "mode") is not None:
        return []
    option = next((name for name in ("packing", "padding_free") if _get(cfg, f"data.{name}", False)), None)
    if option is None:
        return []
    attention = _get(cfg, "model.attn_implementation", "sdpa")
    if _get(cfg, "model.trust_remote_code", False):
        log.warning(
            f"data.{option}=true with modelling code from the checkpoint (trust_remote_code): lit-ft cannot verify "
            f"that it keeps the examples of a row apart by their position_ids; check it, or set data.{option}=false."
        )
    if attention in PACKING_SAFE_ATTENTION:
        return []
    return [
        f"data.{option}=true with model.attn_implementation={attention}: transformers keeps the examples of a row "
        f"apart only with {', '.join(PACKING_SAFE_ATTENTION)}; with {attention} tokens would attend across "
        f"examples. Set model.attn_implementation=sdpa_varlen (or flash_attention_2 on a GPU), or data.{option}=false."
    ]


def check_shared_prompt(cfg: DictConfig) -> list[str]:
    """A shared-prompt layout (preference pairs' ``data.shared_prompt``, online RL's ``module.shared_prompt`` for
    grpo/rloo) needs an attention that reads its branches from the positions (training batches only, as for
    packing)."""
    if _get(cfg, "mode") is not None:
        return []
    attention = _get(cfg, "model.attn_implementation", "sdpa")
    if attention in SHARED_PROMPT_ATTENTION:
        return []

    def refusal(key: str, kept_apart: str, instead: str) -> str:
        return (f"{key}=true with model.attn_implementation={attention}: only {', '.join(SHARED_PROMPT_ATTENTION)} "
                f"keeps {kept_apart}. Set model.attn_implementation=sdpa_varlen, or {key}=false ({instead}).")  # fmt: skip

    errors = []
    if _get(cfg, "data.shared_prompt", False):
        errors.append(refusal(
            "data.shared_prompt",
            "the rejected answer attending to its prompt and never to the chosen answer (sdpa, eager and flex would "
            "cut it off its prompt; flash attention cannot express it)",
            "data.padding_free=true works with flash attention",
        ))  # fmt: skip
    if _get(cfg, "module.shared_prompt", False) and _get(cfg, "module.loss_type") in ADVANTAGES:
        errors.append(refusal(
            "module.shared_prompt",
            "each completion of a group attending to its prompt and never to the other completions",
            "padded rollouts, each prompt run once per completion",
        ))  # fmt: skip
    return errors


def check_flash_attention(cfg: DictConfig) -> list[str]:
    attention = str(_get(cfg, "model.attn_implementation", "sdpa"))
    if attention.startswith("flash_attention") and not _cuda_run(cfg):
        return [f"model.attn_implementation={attention} needs a CUDA GPU (trainer=gpu); on CPU use sdpa."]
    return []


def check_quantization(cfg: DictConfig) -> list[str]:
    quantization = _get(cfg, "model.quantization")
    if not quantization:
        return []
    errors = []
    if not _cuda_run(cfg):
        errors.append(
            f"model.quantization={quantization} (QLoRA) needs a CUDA GPU, bitsandbytes and trainer=gpu. "
            "On CPU use peft=lora: the base stays frozen in full precision."
        )
    if _get(cfg, "module.adapter") is None:
        errors.append(
            f"model.quantization={quantization} freezes the base model in 4 bits, which leaves nothing to train "
            "without adapters: use peft=qlora (or add peft=lora)."
        )
    return errors


def _target_class(cfg: DictConfig, key: str) -> type | None:
    """The class a node's ``_target_`` names (``None`` when absent or not importable: reported elsewhere)."""
    from hydra.utils import get_object

    name = _get(cfg, f"{key}._target_")
    if not isinstance(name, str):  # e.g. `strategy: auto`, a plain value (get_object would log an ERROR)
        return None
    try:
        target = get_object(name)
    except Exception:
        return None
    return target if isinstance(target, type) else None


def check_preference(cfg: DictConfig) -> list[str]:
    """Preference modules need preference pairs, and the other modules need the other data."""
    from lit_ft.data.preference_datamodule import PreferenceDataModule
    from lit_ft.modules.pairwise import PairwiseModule

    module, data = _target_class(cfg, "module"), _target_class(cfg, "data")
    if module is None or data is None or issubclass(module, PairwiseModule) == issubclass(data, PreferenceDataModule):
        return []
    return [
        f"module {module.__name__} and data {data.__name__} do not fit: reward models and DPO train on "
        "preference pairs (data=preference_legal or data=preference), SFT on the other data configs."
    ]


def check_rl_batches(cfg: DictConfig) -> list[str]:
    """Online RL reads one prompt and its reference per row: padded batches only."""
    from lit_ft.modules.rl import RLModule

    module = _target_class(cfg, "module")
    options = [name for name in ("packing", "padding_free") if _get(cfg, f"data.{name}", False)]
    if module is None or not issubclass(module, RLModule) or not options:
        return []
    return [
        f"module=rl reads each row's prompt and reference answer from padded batches, and data.{options[0]}=true "
        f"puts several rows in one: set {' '.join(f'data.{name}=false' for name in options)} (data=rl_legal does)."
    ]


def check_optimizer_in_backward(cfg: DictConfig) -> list[str]:
    """The settings the default config has that optimizer-in-backward refuses (clipping, accumulation), caught
    before the model is loaded; the module checks the rest (distributed strategies) when training starts."""
    from lit_ft.modules.optim import optimizer_in_backward_refusal

    if not _get(cfg, "module.optimizer_in_backward", False):
        return []
    refusal = optimizer_in_backward_refusal(
        _get(cfg, "trainer.accumulate_grad_batches", 1),
        _get(cfg, "trainer.gradient_clip_val"),
        distributed=False,
        l2sp=_get(cfg, "module.l2sp", 0.0),
        fp16_scaling=str(_get(cfg, "trainer.precision", "")) in ("16-mixed", "16"),
        ewc=_get(cfg, "module.ewc.strength", 0.0),
    )
    return [refusal] if refusal else []


def check_forgetting_regularisers(cfg: DictConfig) -> list[str]:
    """L2-SP, EWC and mixout hold a whole copy of the trainable weights (``theta_0``) beside them, which FSDP and
    ZeRO-3 shard; L2-SP and EWC also add to the gradients after backward, which DeepSpeed's engine owns."""
    from lit_ft.strategies import DeepSpeedStrategy, FSDP1Strategy, FSDP2Strategy

    strategy = _target_class(cfg, "strategy")
    if strategy is None or not issubclass(strategy, (DeepSpeedStrategy, FSDP1Strategy, FSDP2Strategy)):
        return []
    shards_weights = not issubclass(strategy, DeepSpeedStrategy) or _get(cfg, "strategy.stage") == 3
    refused = []
    if _get(cfg, "module.l2sp", 0.0):
        refused.append(f"module.l2sp={_get(cfg, 'module.l2sp')} (set module.l2sp=0)")
    if _get(cfg, "module.ewc") is not None:
        refused.append("ewc (set ewc=null)")
    if _get(cfg, "module.mixout") is not None and shards_weights:
        refused.append("mixout (set mixout=null)")
    return [
        f"{choice} does not work with the strategy {_get(cfg, 'strategy._target_')}: it needs the whole weights "
        "(and L2-SP and EWC the gradients after backward) on every rank. Use strategy=ddp or one device."
        for choice in refused
    ]


def check_zero3_callbacks(cfg: DictConfig) -> list[str]:
    """ZeRO-3 empties each parameter outside its forward pass (``param.data`` is a 0-element placeholder), so
    callbacks that read weights between steps would copy, restore and checksum nothing."""
    from lit_ft.callbacks import EarlyStoppingWithRestore, ForgettingCheck
    from lit_ft.strategies import DeepSpeedStrategy

    strategy = _target_class(cfg, "strategy")
    if strategy is None or not issubclass(strategy, DeepSpeedStrategy) or _get(cfg, "strategy.stage") != 3:
        return []
    errors = []
    for name, callback in (_get(cfg, "callbacks") or {}).items():
        target = _target_class(cfg, f"callbacks.{name}")
        restores = (
            target is not None
            and issubclass(target, EarlyStoppingWithRestore)
            and callback.get("restore_best", True)  # the constructor's default
        )
        if restores or (target is not None and issubclass(target, ForgettingCheck)):
            errors.append(
                f"callbacks.{name} ({target.__name__}) reads the weights between steps, which DeepSpeed ZeRO-3 "
                "partitions away: use strategy=fsdp (FSDP2, supported) or deepspeed_zero2, or drop the callback"
                + (f" (or set callbacks.{name}.restore_best=false)." if restores else ".")
            )
    return errors


def check_logger_packages(cfg: DictConfig) -> list[str]:
    """Loggers whose package is an optional extra of lit-ft, refused at start (naming the extra) rather than by
    Lightning once the model has loaded."""
    from lightning.pytorch.loggers import TensorBoardLogger

    errors = []
    for name in _get(cfg, "logger") or {}:
        target = _target_class(cfg, f"logger.{name}")
        # Lightning's TensorBoardLogger writes with tensorboard, or with tensorboardX when that is installed
        if (
            target is not None
            and issubclass(target, TensorBoardLogger)
            and not (find_spec("tensorboard") or find_spec("tensorboardX"))
        ):
            errors.append(
                f"logger.{name} ({target.__name__}) needs the tensorboard package, an optional extra of lit-ft: "
                "pip install 'lit-ft[tensorboard]' (or choose logger=csv or logger=wandb)."
            )
    return errors


CHECKS: list[Check] = [
    check_cuda_only,
    check_packing,
    check_shared_prompt,
    check_flash_attention,
    check_quantization,
    check_preference,
    check_optimizer_in_backward,
    check_rl_batches,
    check_forgetting_regularisers,
    check_zero3_callbacks,
    check_logger_packages,
]


def check_compatibility(cfg: DictConfig) -> list[str]:
    return [error for check in CHECKS for error in check(cfg)]

"""The optimizer of a run: parameter groups (weight decay, layer-wise learning rates), batch-size LR scaling, the
optimizer step fused into backward, the LR schedule, and gradient clipping where Lightning's plugins refuse to."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from lit_ft.models.layers import parameter_depths

log = logging.getLogger(__name__)


def decay_groups(model: nn.Module, weight_decay: float, layer_lr_decay: float | None = None) -> list[dict]:
    """AdamW groups over trainable parameters: matrices decay, norms and biases (ndim < 2) do not.

    This is the split of Hugging Face's Trainer and nanoGPT: decaying a gain or a bias toward 0 only
    fights the layer's scale, while decay on weight matrices regularises.

    With ``layer_lr_decay`` (discriminative fine-tuning, ULMFiT, Howard & Ruder, 2018; the layer-wise decay of
    ELECTRA/BEiT), each depth gets its own pair of groups with ``lr_scale = layer_lr_decay ** (top - depth)``:
    the head and final norm (top) keep the base LR, the top decoder layer gets ``decay`` times it, each layer
    below one more factor, the embeddings (depth 0) the lowest (see :func:`parameter_depths`). Groups come top
    first; the module multiplies each group's LR by its ``lr_scale`` (and logs ``lr`` as the first group's LR
    over its scale: the base LR even when the top does not train, as with LoRA, whose head is frozen).
    """
    depths, top = parameter_depths(model) if layer_lr_decay is not None else ({}, 0)
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups.setdefault((depths.get(id(parameter), top), parameter.ndim >= 2), []).append(parameter)
    result = []
    for (depth, decays), params in sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1])):
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if layer_lr_decay is not None:
            group.update(lr_scale=layer_lr_decay ** (top - depth), depth=depth)
        result.append(group)
    return result


@dataclass
class LRScaling:
    """Scale the learning rate with the global batch size (samples per optimizer step, all ranks).

    ``sqrt``: ``lr = base_lr * sqrt(global_batch / base_batch_size)`` (the rule for Adam-type optimizers,
    Malladi et al., 2022); ``linear``: ``lr = base_lr * global_batch / base_batch_size`` (Goyal et al., 2017, SGD).
    The configured LR is the one tuned at ``base_batch_size``.
    """

    base_batch_size: int
    rule: Literal["sqrt", "linear"] = "sqrt"

    def __call__(self, global_batch_size: int) -> float:
        ratio = global_batch_size / self.base_batch_size
        if self.rule == "sqrt":
            return math.sqrt(ratio)
        if self.rule == "linear":
            return ratio
        raise ValueError(f"unknown LR scaling rule {self.rule!r} (expected 'sqrt' or 'linear')")


def upcast_trainable(model: nn.Module) -> nn.Module:
    """Keep every trainable parameter in float32 (the optimizer's master weights), whatever the model dtype.

    With a model loaded in bf16/fp16 (a frozen LoRA base stored at half the memory), Adam updates to half-precision
    weights would round away most small steps; the frozen parameters stay as loaded. Under ``bf16-mixed``
    autocast the float32 weights are cast to bf16 for each matmul, as for any mixed-precision run.
    """
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def optimizer_in_backward_refusal(
    accumulate_grad_batches: int,
    gradient_clip_val: float | None,
    distributed: bool,
    l2sp: float,
    fp16_scaling: bool,
    ewc: float = 0.0,
) -> str | None:
    """Why :class:`OptimizerInBackward` cannot train a run with these settings, with what to change (``None``: it
    can). Each refused setting needs all the gradients after backward, when each parameter has been updated."""
    problems = []
    if accumulate_grad_batches > 1:
        problems.append(
            f"trainer.accumulate_grad_batches={accumulate_grad_batches}: the update happens in every backward, so "
            "gradients cannot be summed over micro-batches first (raise data.batch_size instead)"
        )
    if gradient_clip_val:
        problems.append(
            f"trainer.gradient_clip_val={gradient_clip_val}: clipping by the global gradient norm needs all the "
            "gradients before the first update (set trainer.gradient_clip_val=null)"
        )
    if distributed:
        problems.append(
            "a distributed or DeepSpeed strategy: gradients are reduced across ranks (or kept by the engine) after "
            "the per-parameter update has run (use one device)"
        )
    if l2sp:
        problems.append(f"module.l2sp={l2sp}: its gradient is added after backward (set module.l2sp=0)")
    if ewc:
        problems.append(f"module.ewc.strength={ewc}: EWC's gradient is added after backward (set ewc=null)")
    if fp16_scaling:
        problems.append("fp16 loss scaling: it unscales the gradients after backward (use bf16-mixed or 32-true)")
    if not problems:
        return None
    return f"module.optimizer_in_backward=true does not work with {'; '.join(problems)}. Or set it to false."


class OptimizerInBackward(torch.optim.Optimizer):
    """The optimizer step fused into backward (torchtune's ``optimizer_in_bwd``): one optimizer per parameter,
    stepped by a ``register_post_accumulate_grad_hook`` as soon as backward has accumulated that parameter's
    gradient, which is then freed.

    A normal step keeps every gradient until backward ends (as much memory as the trainable weights, alive at
    the same time as the optimizer state); here only the gradients backward is still accumulating are alive.
    The updates are those of one optimizer over all the parameters for any element-wise optimizer (AdamW, Adam,
    SGD), provided nothing needs all the gradients before the step: no clipping by the global gradient norm, no
    gradient accumulation over micro-batches, no reduction of gradients across ranks after backward (the module
    refuses those: :func:`optimizer_in_backward_refusal`).

    To Lightning and to LR schedulers it is one optimizer over the same parameter groups:

    - ``grad_scale`` multiplies each gradient just before its step (the module sets it before each backward to turn
      a summed loss's gradients into a mean's);
    - ``param_groups`` hold the hyperparameters a scheduler sets; they are copied into a parameter's own
      optimizer just before its step, so a scheduler stepped on this object drives all of them;
    - ``step(closure)`` only runs the closure (Lightning's forward and backward, in which the updates happen);
    - ``state_dict()`` holds the per-parameter optimizers' states (``per_parameter``, in the order of the groups'
      parameters) beside the groups, and ``load_state_dict`` restores them, so a resumed run continues exactly.

    Args:
        param_groups: parameter groups as for any torch optimizer (for example :func:`decay_groups`).
        optimizer_factory: builds an optimizer from parameter groups (``partial(torch.optim.AdamW, lr=...)``);
            called once on all the groups to complete them with its defaults, then once per parameter.
    """

    def __init__(
        self, param_groups: list[dict[str, Any]], optimizer_factory: Callable[[list[dict]], torch.optim.Optimizer]
    ) -> None:
        template = optimizer_factory(param_groups)  # completes each group with the optimizer's defaults (lr, ...)
        super().__init__(template.param_groups, template.defaults)
        self.grad_scale = 1.0
        self.optimizers: list[torch.optim.Optimizer] = []
        self._hooks = []
        for index, group in enumerate(self.param_groups):
            for parameter in group["params"]:
                optimizer = optimizer_factory([{**group, "params": [parameter]}])
                self.optimizers.append(optimizer)
                hook = partial(self._step_parameter, index, optimizer)
                self._hooks.append(parameter.register_post_accumulate_grad_hook(hook))

    def _step_parameter(self, group_index: int, optimizer: torch.optim.Optimizer, parameter: torch.Tensor) -> None:
        # By index: load_state_dict replaces the group dicts.
        group = self.param_groups[group_index]
        optimizer.param_groups[0].update((key, value) for key, value in group.items() if key != "params")
        if self.grad_scale != 1.0:
            parameter.grad.mul_(self.grad_scale)
        optimizer.step()
        parameter.grad = None

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``closure`` (forward and backward, which update the parameters); there is nothing left to do."""
        return closure() if closure is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "per_parameter": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # the groups (what the scheduler set); the per-parameter key is ignored
        states = state_dict["per_parameter"]
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"the checkpoint holds {len(states)} per-parameter optimizer states, expected "
                f"{len(self.optimizers)} (was it saved with the same trainable parameters?)"
            )
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)

    def remove_hooks(self) -> None:
        """Detach the update from backward (at the end of training: later backward passes must not step)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def build_optimizer(
    module: L.LightningModule,
    optimizer_factory: Callable[[list[dict]], torch.optim.Optimizer],
    scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler],
    weight_decay: float,
    layer_lr_decay: float | None,
    lr_scaling: LRScaling | None,
    l2sp: float,
    in_backward: bool,
    ewc: float = 0.0,
) -> dict[str, Any]:
    """What ``module.configure_optimizers`` returns: ``optimizer_factory`` over :func:`decay_groups` of the
    module's trainable parameters (fused into backward with ``in_backward``: :class:`OptimizerInBackward`), each
    group's LR times its ``lr_scale`` and the ``lr_scaling`` factor (:func:`batch_lr_factor`), and the schedule from
    ``scheduler_factory(optimizer, num_training_steps)``, stepped every optimizer step.

    Refused with what to change: ``in_backward`` with settings that need all gradients after backward
    (:func:`optimizer_in_backward_refusal`), and L2-SP or EWC (strength ``ewc``) under DeepSpeed (its engine owns
    the gradients, to which they add their own).
    """
    trainer = module.trainer
    num_training_steps = int(trainer.estimated_stepping_batches)
    groups = decay_groups(module, weight_decay, layer_lr_decay)
    if (l2sp or ewc) and trainer.strategy.handles_gradient_accumulation:
        raise ValueError("L2-SP and EWC are not supported under DeepSpeed (its engine owns the gradients)")
    if in_backward:
        # Lightning keeps automatic optimization: to it this is one optimizer whose step() runs the closure
        # (forward, backward: the per-parameter updates happen in there), so its hooks, logging, LR scheduler
        # and checkpointing work unchanged. Manual optimization would need its own training_step in every
        # module (SFT, reward, DPO) for the same result.
        refusal = optimizer_in_backward_refusal(
            trainer.accumulate_grad_batches,
            trainer.gradient_clip_val,
            distributed=trainer.world_size > 1 or trainer.strategy.handles_gradient_accumulation,
            l2sp=l2sp,
            fp16_scaling=getattr(trainer.precision_plugin, "scaler", None) is not None,
            ewc=ewc,
        )
        if refusal:
            raise ValueError(refusal)
        optimizer = OptimizerInBackward(groups, optimizer_factory)
    else:
        optimizer = optimizer_factory(groups)
    batch_factor = batch_lr_factor(trainer, lr_scaling)
    for group in optimizer.param_groups:  # before the scheduler records each group's initial LR
        group["lr"] *= batch_factor * group.get("lr_scale", 1.0)
    if layer_lr_decay is not None:
        lrs = ", ".join(f"{d}: {lr:.3g}" for d, lr in {g["depth"]: g["lr"] for g in optimizer.param_groups}.items())
        log.info("Layer-wise learning rates (depth: lr, top first): %s", lrs)
    scheduler = scheduler_factory(optimizer, num_training_steps=num_training_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def batch_lr_factor(trainer: L.Trainer, lr_scaling: LRScaling | None) -> float:
    """The ``lr_scaling`` multiplier for the run's global batch (examples or packed sequences per optimizer step
    over all ranks), logged when it applies; 1 without ``lr_scaling``."""
    if lr_scaling is None:
        return 1.0
    if trainer.train_dataloader is None:  # not loaded yet when training is bounded by max_steps only
        trainer.fit_loop.setup_data()
    batch_size = getattr(trainer.train_dataloader, "batch_size", None)
    if batch_size is None:
        raise ValueError("lr_scaling needs a training DataLoader with a batch_size")
    global_batch = batch_size * trainer.accumulate_grad_batches * trainer.world_size
    factor = lr_scaling(global_batch)
    log.info(
        "LR scaling (%s rule): global batch %d, base batch %d -> LR x %.4g",
        lr_scaling.rule,
        global_batch,
        lr_scaling.base_batch_size,
        factor,
    )
    return factor


def clip_by_global_norm(
    trainer: L.Trainer, optimizer: torch.optim.Optimizer, clip_val: float | None, algorithm: str | None
) -> bool:
    """Clip the gradients by global norm in the two setups where Lightning's precision plugins refuse to; return
    whether it did (otherwise the module leaves clipping to Lightning):

    - bf16 autocast (``bf16-mixed``, ``trainer=gpu``) with a fused optimizer (AdamW's default here): Lightning
      refuses because a fused step unscales gradients itself, after any clip; bf16 has no loss scaler, so there
      is nothing to unscale and the plain clip is right.
    - FSDP1 (``strategy=fsdp1``): the norm is over sharded gradients, which only the root FSDP wrapper's
      ``clip_grad_norm_`` computes (Lightning's FSDP documentation recipe).

    It lives with the optimizer setup, not in the module: which clip is right depends on the optimizer (fused or
    not), the precision plugin and the strategy, never on what the module trains.
    """
    if not clip_val or algorithm not in (None, "norm"):
        return False
    plugin = trainer.precision_plugin
    if isinstance(trainer.strategy, FSDPStrategy):
        trainer.model.clip_grad_norm_(clip_val)
    elif isinstance(plugin, MixedPrecision) and plugin.scaler is None:
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip_val)
    else:
        return False
    return True

"""Optimizer parameter groups (weight decay, layer-wise learning rates) and batch-size LR scaling."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
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
    first, so ``param_groups[0]`` carries the base LR. The module multiplies each group's LR by its ``lr_scale``.
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

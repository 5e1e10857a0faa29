"""mixout: while training, each weight of the chosen linear layers is put back to its starting (pretrained) value
with probability p, as dropout puts activations to zero."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def mixout_weight(weight: torch.Tensor, anchor: torch.Tensor, p: float) -> torch.Tensor:
    """``(mask * w + (1 - mask) * w0 - p * w0) / (1 - p)``, ``mask ~ Bernoulli(1 - p)`` per element (Lee, Cho and
    Kang, 2020, "Mixout: Effective regularization to finetune large-scale pretrained language models", eq. in
    section 3): each element is ``w0`` with probability ``p`` and ``(w - p w0) / (1 - p)`` otherwise, so its
    expectation is ``w``; gradients reach ``w`` through the kept elements, scaled by ``1 / (1 - p)``."""
    keep = torch.rand_like(weight) >= p
    return (torch.where(keep, weight, anchor) - p * anchor) / (1 - p)


class MixoutLinear(nn.Linear):
    """A linear layer that uses :func:`mixout_weight` of its weight in training mode and its weight as it is in
    eval mode. It holds the layer's own parameters (same names, same state dict) and ``anchor``, the weight's
    starting value: a plain tensor, not a buffer, so it is neither saved nor broadcast by DDP at every forward
    (it follows the weight's device at the first forward after a move)."""

    def __init__(self, linear: nn.Linear, p: float) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: the parameters are the wrapped layer's, not new ones
        self.in_features, self.out_features, self.p = linear.in_features, linear.out_features, p
        self.weight, self.bias = linear.weight, linear.bias
        self.anchor = linear.weight.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight, self.bias)
        if self.anchor.device != self.weight.device:  # after the model moved (no attribute write otherwise)
            self.anchor = self.anchor.to(self.weight.device)
        return F.linear(x, mixout_weight(self.weight, self.anchor, self.p), self.bias)


class Mixout:
    """Mix the trainable weights of the chosen linear layers with their values when the model was built.

    Applied when the model is built (:meth:`apply`), to each ``nn.Linear`` whose weight trains and whose name has
    a part in ``target_modules`` (``all-linear``: every one but the output head, as peft means it). Biases are
    left alone, as in the paper. Off in eval mode (validation, generation, scoring, export).

    - Full fine-tuning (the paper's setting): each weight mixes with its pretrained value.
    - LoRA: the trainable linear layers are the adapters' ``lora_A`` and ``lora_B``, which mix with their
      initialisation. ``lora_B`` starts at 0, so on it mixout is DropConnect with ``1/(1-p)`` rescaling (each entry
      of ``B`` dropped to 0 with probability ``p``), and the expected update ``E[B' A'] = B A`` is unchanged (the
      masks of ``A`` and ``B`` are independent). ``peft.dropout`` is another thing: dropout on the adapter's input.
    - Frozen weights (a frozen base, ``freeze=...``) are never mixed: they are their pretrained value already.

    Memory: one copy of each mixed weight (``anchor``), and a mask per layer while it runs.

    Args:
        p: probability of each weight being put back to its starting value, in [0, 1).
        target_modules: ``all-linear``, or names of modules (``[q_proj, v_proj]``): the linear layers at or inside
            them are mixed.
    """

    def __init__(self, p: float, target_modules: str | Sequence[str] = "all-linear") -> None:
        if not 0 <= p < 1:
            raise ValueError(f"mixout p={p}: must be in [0, 1) (the probability of a weight going back to w0)")
        if isinstance(target_modules, str) and target_modules != "all-linear":
            raise ValueError(f"mixout target_modules={target_modules!r}: 'all-linear' or a list of module names")
        self.p = p
        self.target_modules = target_modules if isinstance(target_modules, str) else list(target_modules)

    def targeted(self, name: str, layer: nn.Module, head: nn.Module | None) -> bool:
        if not isinstance(layer, nn.Linear) or not layer.weight.requires_grad:
            return False
        if self.target_modules == "all-linear":
            return layer is not head
        return bool(set(name.split(".")) & set(self.target_modules))

    def apply(self, model: nn.Module) -> list[str]:
        """Replace each targeted layer of ``model`` by a :class:`MixoutLinear`; return their names."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        names = [name for name, layer in model.named_modules() if self.targeted(name, layer, head)]
        if not names:
            raise ValueError(
                f"mixout target_modules={self.target_modules}: no trainable linear layer matches (frozen layers "
                "are not mixed); name modules the run trains, or use all-linear"
            )
        for name in names:
            _replace(model, name, MixoutLinear(model.get_submodule(name), self.p))
        return names

    @staticmethod
    def remove(model: nn.Module) -> None:
        """Put plain ``nn.Linear`` layers (the same parameters) back in place of the mixed ones: at the end of
        training, so the model a curriculum hands to its next stage, or a user gets, is the plain model."""
        for name, layer in list(model.named_modules()):
            if isinstance(layer, MixoutLinear):
                plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
                plain.weight, plain.bias = layer.weight, layer.bias
                _replace(model, name, plain.train(layer.training))


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, layer)

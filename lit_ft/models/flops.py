"""Training FLOPs per token of a model, read from its linear maps and decoder layers: the numerator of MFU
(the ``Throughput`` callback divides by the device's peak, :func:`lit_ft.utils.perf.peak_flops`)."""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

from lit_ft.models.layers import decoder_layers


def _matmul_weights(module: nn.Module) -> list[nn.Parameter]:
    """Weights of the linear maps in ``module`` (each once, so a tied LM head counts once)."""
    seen: dict[int, nn.Parameter] = {}
    for child in module.modules():
        if isinstance(child, (nn.Linear, Conv1D)):
            seen[id(child.weight)] = child.weight
    return list(seen.values())


def _numel(weights: list[nn.Parameter], trainable_only: bool = False) -> int:
    return sum(w.numel() for w in weights if w.requires_grad or not trainable_only)


def backprop_weights(model: nn.Module) -> int:
    """Matmul weights that activation gradients flow through: all of them from the lowest decoder layer that
    trains upwards (everything when the input embedding trains, e.g. a tied LM head)."""
    everything = _numel(_matmul_weights(model))
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and any(p.requires_grad for p in embeddings.parameters()):
        return everything
    try:
        layers = decoder_layers(model)
    except ValueError:  # not a decoder we can read: assume gradients reach the bottom
        return everything
    first = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), len(layers))
    below = sum(_numel(_matmul_weights(layer)) for layer in layers[:first])
    return everything - below


def training_flops_per_token(model: nn.Module) -> float:
    """FLOPs of one training token: ``2·N + 2·N_backprop + 2·N_trainable``.

    With N the weights of all linear maps (the LM head included, the embedding lookup not), a token costs
    ``2·N`` in the forward pass, ``2·N_backprop`` to propagate activation gradients through the linear maps
    at or above the lowest trainable layer, and ``2·N_trainable`` for the weight gradients. Full fine-tuning
    gives the usual ``6·N``; LoRA about ``4·N`` (the frozen weights pass gradients on but get none);
    training the top k layers only ``2·N`` plus ``4·N`` of those layers and the head. Attention's
    sequence-length term (``12·layers·hidden·T`` per token, a few percent at T of a few hundred) and
    activation-checkpointing recomputation are not counted (MFU, not hardware FLOP utilisation). The head's
    share is :func:`head_flops_per_token`.
    """
    weights = _matmul_weights(model)
    return 2.0 * _numel(weights) + 2.0 * backprop_weights(model) + 2.0 * _numel(weights, trainable_only=True)


def head_flops_per_token(model: nn.Module) -> float:
    """The LM head's part of :func:`training_flops_per_token`: ``2·N_head`` forward, ``2·N_head`` for the
    gradient of the hidden states, and ``2·N_head`` more when the head trains. 0 for a model without an output
    embedding (a reward model, whose small score head stays in the rest). A module that runs the head only on
    loss tokens does this share of the FLOPs on those tokens only (see the ``Throughput`` callback)."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a peft wrapper
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return 0.0
    return (6.0 if head.weight.requires_grad else 4.0) * head.weight.numel()

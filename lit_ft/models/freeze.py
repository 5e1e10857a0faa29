"""Frozen-backbone fine-tuning: train only the top decoder layers and/or the LM head."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from lit_ft.models.layers import decoder_layers

log = logging.getLogger(__name__)


def head_parameters(model: PreTrainedModel) -> list[nn.Parameter]:
    """The output head's parameters: the LM head, or for a model with a task head instead (a reward model's
    ``score``) every parameter outside the backbone (``base_model_prefix``)."""
    head = model.get_output_embeddings()
    if head is not None:
        return list(head.parameters())
    return [p for name, p in model.named_parameters() if not name.startswith(f"{model.base_model_prefix}.")]


@dataclass
class Freeze:
    """Freeze the whole model, then unfreeze the last ``train_last_layers`` decoder layers, the LM head and/or
    the final norm.

    ``train_last_layers=0, train_lm_head=True`` is feature extraction (a new head on frozen features). With tied
    embeddings (SmolLM2), the LM head *is* the input embedding matrix, so training it trains both. A model with
    a task head (a reward model's score) trains that head instead.
    """

    train_last_layers: int = 0
    train_lm_head: bool = False
    train_final_norm: bool = True

    def __call__(self, model: PreTrainedModel) -> PreTrainedModel:
        model.requires_grad_(False)
        layers = decoder_layers(model)
        if not 0 <= self.train_last_layers <= len(layers):
            raise ValueError(f"train_last_layers={self.train_last_layers}, but the model has {len(layers)} layers")
        for layer in layers[len(layers) - self.train_last_layers :]:
            layer.requires_grad_(True)
        if self.train_lm_head:
            for parameter in head_parameters(model):
                parameter.requires_grad_(True)
        if self.train_final_norm and self.train_last_layers:
            norm = getattr(model.get_decoder(), "norm", None)
            if norm is not None:
                norm.requires_grad_(True)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("Freeze leaves nothing to train: set train_last_layers > 0 or train_lm_head=true")
        return model

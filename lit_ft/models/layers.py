"""Find a model's decoder layers without naming the architecture."""

from __future__ import annotations

from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder blocks (``model.model.layers`` for Llama, ``transformer.h`` for GPT-2...).

    Found as the longest ModuleList whose entries are all of one class that the model lists in
    ``_no_split_modules`` (transformers' own name for its decoder block), else the longest uniform ModuleList.
    """
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    candidates = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(c).__name__ for c in module}) == 1:
            candidates.append(((type(module[0]).__name__ in block_names, len(module)), module))
    best = max(candidates, key=lambda c: c[0])[1] if candidates else None
    if best is None:
        raise ValueError(f"no list of decoder layers found in {type(model).__name__}")
    return best


def decoder_layer_class(model: nn.Module) -> type[nn.Module]:
    """The class of the decoder block (for FSDP wrapping and activation checkpointing policies)."""
    return type(decoder_layers(model)[0])


def decoder_layer_classes(module: nn.Module) -> set[type[nn.Module]]:
    """The decoder-block classes of every ``transformers`` model inside ``module`` (a LightningModule holding a
    policy and a reference model, a peft-wrapped model, ...); ``module``'s own block class when it holds none."""
    from transformers import PreTrainedModel

    models = [m for m in module.modules() if isinstance(m, PreTrainedModel)] or [module]
    return {decoder_layer_class(m) for m in models}


def parameter_depths(model: nn.Module) -> tuple[dict[int, int], int]:
    """Depth of every parameter, bottom to top: ``({id(parameter): depth}, top_depth)``.

    Embeddings (``nn.Embedding`` parameters) are depth 0, decoder layer ``i`` is depth ``i + 1``, everything else
    (final norm, LM head, a score head) is the top, ``len(layers) + 1``. With tied input/output embeddings the
    shared matrix is an embedding (depth 0). Adapter parameters (LoRA) take the depth of the layer holding them.
    """
    layers = decoder_layers(model)
    top = len(layers) + 1
    depths = {id(p): top for p in model.parameters()}
    for index, layer in enumerate(layers):
        depths.update({id(p): index + 1 for p in layer.parameters()})
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            depths.update({id(p): 0 for p in module.parameters()})
    return depths, top

"""Generating ``G`` completions per prompt with each prompt's KV cache computed once; and the ``generate`` inputs
every generating caller shares (left-padded prompts, sampling arguments).

``generate`` on a batch of prompts each repeated ``G`` times runs the prompt through the model ``G`` times: on a
CPU, with prompts of 150 tokens and answers of 10, that prefill is most of the generation. Here the prompts are run
once (without the last token, as ``generate`` expects of a cache it continues), the cache is repeated ``G`` times
along the batch (``Cache.batch_repeat_interleave``, what transformers' own beam search uses) and ``generate``
continues from it: the same tokens as the repeated batch, since each row attends to the same keys and values.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache


def generating_model(model: nn.Module) -> nn.Module:
    """The module whose forward ``generate`` runs at each step: a peft model's base model (its adapter layers are
    inside it), else the model. The prefill goes through it too: under FSDP2, a forward of the root would run the
    root's hooks, which shard again the root's weights that the caller gathered for generation."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_argument(model: nn.Module) -> str:
    """The name ``forward`` and ``generate`` take a KV cache under: ``cache`` in recent transformers 5 releases,
    ``past_key_values`` before (still accepted, with a deprecation warning, until 5.40)."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def sampling_kwargs(do_sample: bool, temperature: float = 1.0, top_p: float = 1.0) -> dict[str, Any]:
    """``generate`` arguments for greedy decoding or nucleus sampling (sampling knobs only when sampling)."""
    return {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}


def left_padded(
    prompts: list[list[int]], pad: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of ``prompts`` as one left-padded batch [B, T] (T: the longest; ``generate`` continues each row at
    its end) and its attention mask (0 on the padding)."""
    length = max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (length - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=device)
    return input_ids, attention_mask


def padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch [B, T], as ``generate`` derives them: each row counts from 0 at its first
    real token (padding gets 1, and is masked)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


@torch.no_grad()
def generate_groups(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, count: int, **generation: Any
) -> torch.Tensor:
    """``count`` completions of each of the left-padded prompts ``input_ids`` [P, T] (prompt-major), as
    ``model.generate(input_ids.repeat_interleave(count, 0), ...)`` returns them: [P * count, T + new].

    The prompts' cache is built by one forward of the P prompts (their last token left for ``generate``) and
    repeated ``count`` times; ``generation``: the other ``generate`` arguments (``use_cache`` and the cache are
    this function's). With ``count == 1`` this is plain ``generate``."""
    repeated_ids = input_ids.repeat_interleave(count, 0)
    repeated_mask = attention_mask.repeat_interleave(count, 0)
    if count == 1 or input_ids.shape[1] < 2:
        return model.generate(input_ids=repeated_ids, attention_mask=repeated_mask, use_cache=True, **generation)
    forward = generating_model(model)
    cache, name = DynamicCache(), cache_argument(forward)
    forward(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=padded_positions(attention_mask[:, :-1]),
        use_cache=True,
        logits_to_keep=1,  # the prefill's logits are not used: only the cache is
        **{name: cache},
    )
    cache.batch_repeat_interleave(count)
    return model.generate(
        input_ids=repeated_ids, attention_mask=repeated_mask, use_cache=True, **{name: cache}, **generation
    )

"""A tiny randomly initialised Llama for fast tests, sized to a real tokenizer's vocabulary."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerBase

from lit_ft.models.loading import Head


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    head: Head = "lm",
) -> LlamaForCausalLM | LlamaForSequenceClassification:
    """Build a small Llama (same architecture as SmolLM2, tied embeddings) with a seeded random init; with
    ``head="score"`` a one-label sequence classifier (a reward model) instead of the LM head."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=False,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(seed)
    if head == "score":
        config.num_labels = 1
        return LlamaForSequenceClassification(config)
    return LlamaForCausalLM(config)


def load_tiny_llama(
    name_or_path: str = "smollm2-135m-instruct", head: Head = "lm", **sizes: int
) -> LlamaForCausalLM | LlamaForSequenceClassification:
    """:func:`tiny_llama` for config files; ``name_or_path`` names the tokenizer (``model=tiny`` smoke runs)."""
    from lit_ft.models.loading import load_tokenizer

    return tiny_llama(load_tokenizer(name_or_path), head=head, **sizes)

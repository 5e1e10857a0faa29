"""Batched generation of answers to held-out prompts (greedy or sampled).

Prompts are those of :mod:`lit_ft.data.prompts`: a data row cut before the answer it was trained on, with
``"messages"`` (rendered with the chat template and the assistant header, as training tokenises it) or ``"text"``
(continued as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.data.prompts import Prompt
from lit_ft.data.tokenize import render_ids
from lit_ft.models.group_generation import left_padded, sampling_kwargs
from lit_ft.utils.distributed import root_weights_gathered

# Prompts generated together. On a 2-core CPU (SmolLM2-135M with an unmerged LoRA adapter, the 88 held-out legal
# prompts, 64 new tokens, 2026-12-06, idle) batches of 32 answered in 49-51 s against 85-102 s for 8 (three runs),
# 68 s for 16 and 62 s for all 88 at once: a decode step reads every weight once whatever the batch, and one batch
# runs until its longest answer ends. Task scores during training and eval.py share it (conf: task_scores, entry/eval).
GENERATION_BATCH_SIZE = 32


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids the answer is generated after: chat template + assistant header, or the raw text prompt."""
    if "messages" in prompt:
        return render_ids(tokenizer, prompt["messages"], add_generation_prompt=True)
    return tokenizer(prompt["text"], add_special_tokens=False)["input_ids"]


@torch.no_grad()
def generate_answer_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 128,
    batch_size: int = GENERATION_BATCH_SIZE,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    synced_gpus: bool = False,
    device: torch.device | None = None,
) -> list[list[int]]:
    """Token ids of the answers to ``prompts``, in order, each up to its end (EOS/end-of-turn, not included):
    left-padded batches of similar length, each batch generating until all its answers ended or
    ``max_new_tokens``. The number of ids is the answer's cost in generated tokens.

    Sampled answers are reproducible for a given ``seed`` and ``batch_size``; the caller's random state is left
    as it was (a training run that generates between steps keeps its dropout stream).

    Args:
        device: where the inputs go (default: the first parameter's device; pass the module's compute device
            when parameters are offloaded to the CPU).
        synced_gpus: in a distributed run where every rank calls this, each rank goes on running forwards until
            all ranks have ended their answers (under FSDP2 or ZeRO-3 each forward gathers the weights from all
            ranks, so a rank that ended sooner must not stop).
    """
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers: list[list[int]] = [[] for _ in encoded]
    device = device or next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), root_weights_gathered(model):
        torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            input_ids, attention_mask = left_padded([encoded[i] for i in batch], pad, device)
            length = input_ids.shape[1]
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
                synced_gpus=synced_gpus,
                **sampling_kwargs(do_sample, temperature, top_p),
            )
            for row, index in enumerate(batch):
                ids = output[row, length:].tolist()
                # after its EOS, a finished answer is only padding (the pad id may be the EOS id itself)
                answers[index] = ids[: ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids
    model.train(was_training)
    return answers


def decode_answer(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """An answer's text: its ids decoded without special tokens, stripped."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], **generation: Any
) -> list[str]:
    """Answers to ``prompts``, in order, as text (``generation``: the options of :func:`generate_answer_ids`)."""
    return [decode_answer(tokenizer, ids) for ids in generate_answer_ids(model, tokenizer, prompts, **generation)]

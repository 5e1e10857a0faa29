"""Elastic Weight Consolidation: L2-SP's pull toward the starting weights, each weight's pull scaled by its diagonal
Fisher information on general text, estimated once before training."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lit_ft.data.collate import Collator
from lit_ft.data.readers import load_passages
from lit_ft.data.tokenize import tokenize_text
from lit_ft.losses import ewc_penalty
from lit_ft.modules.l2sp import L2SP
from lit_ft.utils.distributed import unwrapped_name
from lit_ft.utils.metric_names import EWC as EWC_METRIC

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def diagonal_fisher(
    example_loss: Callable[[Any], torch.Tensor], parameters: dict[str, torch.Tensor], examples: Iterable[Any]
) -> tuple[dict[str, torch.Tensor], int]:
    """The empirical diagonal Fisher ``F_i = 1/N sum_n (d l_n / d theta_i)^2`` of ``parameters`` over ``N``
    ``examples`` (one backward each, ``l_n = example_loss(example_n)``), in float32; and ``N``.

    Per-example gradients, squared, then averaged: squaring the gradient of a batch's mean loss instead,
    ``(1/B sum_n g_n)^2``, would add the cross terms ``g_n g_m`` and shrink the squares by ``1/B``, an estimate
    biased towards 0 by the batch size. The gradients are taken with ``torch.autograd.grad``, so ``.grad`` is
    untouched.
    """
    names = list(parameters)
    fisher = {name: torch.zeros_like(parameters[name], dtype=torch.float32) for name in names}
    count = 0
    for example in examples:
        grads = torch.autograd.grad(example_loss(example), [parameters[n] for n in names], allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is not None:  # a weight this loss does not reach: no information, F = 0
                fisher[name].add_(grad.float().pow(2))
        count += 1
    if count == 0:
        raise ValueError("the Fisher information needs at least one example")
    return {name: value / count for name, value in fisher.items()}, count


class EWC(L2SP):
    """``strength * sum_i F_i (theta_i - theta0_i)^2`` over the trainable weights (Kirkpatrick et al., 2017,
    "Overcoming catastrophic forgetting in neural networks"; :func:`lit_ft.losses.ewc_penalty`): weights that matter
    to general text are held near ``theta_0``, the others are free. No 1/2: the paper's ``lambda`` is ``2 *
    strength``. Its gradient ``2 * strength * F * (theta - theta_0)`` is added, like L2-SP's, after the
    token-mean scaling, so it does not grow with a step's token count; logged as ``train/ewc``.

    ``F`` is the empirical diagonal Fisher (:func:`diagonal_fisher`) of the mean next-token loss of each passage of
    ``data_file`` (``{"text"}`` rows, plain text without chat template, ending in EOS), at the weights training
    starts from (``theta_0``, copied at the same time), with dropout off: one backward per passage. Empirical
    (the passages' own tokens as targets) rather than the true Fisher (targets sampled from the model): one
    backward per passage instead of one per sample, and the usual choice for language models. Mean rather
    than summed token loss, so ``F`` does not grow with the passages' length.

    Which weights: the trainable ones. Full fine-tuning: every weight. LoRA: the adapters, ``theta_0`` being
    their initialisation; as ``lora_B`` starts at 0 the loss is flat in ``lora_A`` there, so ``F`` of ``lora_A``
    is 0 and EWC holds ``lora_B`` only (which is what makes the update ``B A`` non-zero).

    Memory: ``F`` and ``theta_0``, one float32 copy each of the trainable weights (for full fine-tuning of
    SmolLM2-135M, 2 x 540 MB), plus one set of gradients while estimating. Both are saved in checkpoints (a
    resumed run has trained away from ``theta_0`` and cannot re-estimate them).

    Args:
        strength: ``lambda`` (> 0). ``F`` is small (squared per-weight gradients), so useful values are large:
            the log line of the estimate gives ``F``'s mean, and ``strength * mean(F)`` is L2-SP's strength of
            the same average pull.
        data_file: general text to protect (default in ``conf/ewc/general.yaml``: the forgetting check's prose).
        max_examples: use this many passages, spread evenly over the file (None: all).
        max_length: passages are cut to this many tokens (the number cut is logged).
    """

    metric = EWC_METRIC

    def __init__(self, strength: float, data_file: str, max_examples: int | None = None, max_length: int = 512) -> None:
        if not strength > 0:
            raise ValueError(f"ewc strength={strength}: must be > 0 (to turn EWC off, leave out ewc= or set ewc=null)")
        if max_length < 2:
            raise ValueError(f"ewc max_length={max_length}: a passage needs at least 2 tokens to have a target")
        super().__init__(strength)
        self.data_file, self.max_examples, self.max_length = data_file, max_examples, max_length
        self.fisher: dict[str, torch.Tensor] = {}
        self.examples = 0  # passages the Fisher was estimated on

    def batches(self, tokenizer: PreTrainedTokenizerBase) -> list[Batch]:
        """One batch per passage of ``data_file``: loss on every token (:func:`lit_ft.data.tokenize.tokenize_text`),
        cut to ``max_length``."""
        passages = load_passages(self.data_file, self.max_examples)
        collate = Collator(pad_token_id=tokenizer.pad_token_id or 0)
        batches, cut = [], 0
        for passage in passages:
            tokens = tokenize_text(tokenizer, "", passage)
            cut += len(tokens["input_ids"]) > self.max_length
            example = {key: value[: self.max_length] for key, value in tokens.items()}
            batches.append(collate([{**example, "task_ids": [0] * len(example["input_ids"])}]))
        if cut:
            log.info("EWC: %d of %d passages cut to max_length=%d tokens", cut, len(passages), self.max_length)
        return batches

    def estimate(
        self, module: nn.Module, tokenizer: PreTrainedTokenizerBase, example_loss: Callable[[Batch], torch.Tensor]
    ) -> None:
        """Copy ``module``'s trainable weights as ``theta_0`` and estimate their Fisher, ``example_loss`` being a
        batch's mean token loss; dropout is off meanwhile."""
        started = time.perf_counter()
        self.anchor(module)
        params = {unwrapped_name(n): p for n, p in module.named_parameters() if p.requires_grad}
        device = next(iter(params.values())).device
        batches = ({key: value.to(device) for key, value in batch.items()} for batch in self.batches(tokenizer))
        was_training = module.training
        module.eval()
        try:
            with torch.enable_grad():
                self.fisher, self.examples = diagonal_fisher(example_loss, params, batches)
        finally:
            module.train(was_training)
        values = torch.cat([f.flatten() for f in self.fisher.values()])
        log.info(
            "EWC: diagonal Fisher of %s weights over %d passages of %s in %.1f s: mean %.3g, max %.3g",
            f"{values.numel():,}", self.examples, self.data_file, time.perf_counter() - started,
            values.mean().item(), values.max().item(),
        )  # fmt: skip

    def importance(self, name: str, parameter: torch.Tensor) -> torch.Tensor:
        self.fisher[name] = self.fisher[name].to(parameter.device)  # once, after device moves
        return self.fisher[name]

    def penalty(self, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        names = list(parameters)
        return ewc_penalty(list(parameters.values()), [self.anchors[n] for n in names], [self.fisher[n] for n in names])

    def state_dict(self) -> dict[str, Any]:
        """``theta_0`` and ``F`` (name -> tensor) and the passage count, for a checkpoint."""
        return {"anchors": self.anchors, "fisher": self.fisher, "examples": self.examples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors, self.fisher, self.examples = dict(state["anchors"]), dict(state["fisher"]), state["examples"]

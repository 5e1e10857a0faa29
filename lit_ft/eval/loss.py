"""Loss and perplexity per task type over a data loader, from the module's own ``token_losses``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from lit_ft.modules.causal_lm import CausalLMModule


def grouped_sums(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, count)`` [G] float64: the sum and number of ``values`` [N] per group id in ``groups`` [N].

    Negative group ids (padding) are skipped. One-hot sums rather than ``bincount``/``scatter_add`` keep the
    result deterministic on every device.
    """
    keep = groups >= 0
    onehot = torch.nn.functional.one_hot(groups[keep], num_groups).to(torch.float64)
    return values[keep].to(torch.float64) @ onehot, onehot.sum(0)


@torch.no_grad()
def task_losses(
    module: CausalLMModule,
    batches: Iterable[dict[str, torch.Tensor]],
    task_names: Sequence[str],
    max_batches: int | None = None,
) -> dict[str, dict[str, float]]:
    """Token-weighted loss per task type: ``{task: {"loss", "ppl", "tokens"}}`` plus ``"all"`` over every task.

    ``loss = sum of token losses / loss tokens`` (the definition of ``val/loss``), ``ppl = exp(loss)``.
    """
    total = torch.zeros(len(task_names), dtype=torch.float64)
    count = torch.zeros(len(task_names), dtype=torch.float64)
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        out = module.token_losses({k: v.to(module.device) for k, v in batch.items()})
        mask = out["loss_mask"]
        sums, tokens = grouped_sums(out["per_token_loss"][mask], out["task_ids"][mask], len(task_names))
        total += sums.cpu()
        count += tokens.cpu()
    result = {}
    for name, loss_sum, tokens in [*zip(task_names, total.tolist(), count.tolist()), ("all", total.sum(), count.sum())]:
        if tokens:
            loss = float(loss_sum) / float(tokens)
            result[name] = {"loss": loss, "ppl": math.exp(loss), "tokens": float(tokens)}
    return result

"""Loss and perplexity per task type over a data loader, from the module's own ``token_losses``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from lit_ft.eval.grouped_mean import GroupedMean
from lit_ft.modules.causal_lm import CausalLMModule


@torch.no_grad()
def task_losses(
    module: CausalLMModule,
    batches: Iterable[dict[str, torch.Tensor]],
    task_names: Sequence[str],
    max_batches: int | None = None,
) -> dict[str, dict[str, float | int]]:
    """Token-weighted loss per task type: ``{task: {"loss", "ppl", "tokens"}}`` plus ``"all"`` over every task.

    ``loss = sum of token losses / loss tokens`` (the definition of ``val/loss``), ``ppl = exp(loss)``.
    """
    grouped = GroupedMean(len(task_names)).to(module.device)  # the per-task loss of the TaskMetrics callback
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        out = module.token_losses({k: v.to(module.device) for k, v in batch.items()})
        mask = out["loss_mask"]
        grouped.update(out["per_token_loss"][mask], out["task_ids"][mask])
    total, count = grouped.total.cpu(), grouped.count.cpu()
    result = {}
    for name, loss_sum, tokens in [*zip(task_names, total.tolist(), count.tolist()), ("all", total.sum(), count.sum())]:
        if tokens:
            loss = float(loss_sum) / float(tokens)
            result[name] = {"loss": loss, "ppl": math.exp(loss), "tokens": int(tokens)}
    return result

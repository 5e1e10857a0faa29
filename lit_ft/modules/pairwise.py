"""Shared machinery of modules trained on preference pairs: per-pair losses, their reduction, reward metrics."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric

from lit_ft.data.batch import sequence_task_ids
from lit_ft.modules.fine_tune import FineTuneModule, StepOutput
from lit_ft.utils.metric_names import REWARD_METRICS, VAL_LOSS, stage_metric


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies`` (1 where chosen > rejected, ties
    count 0) and ``rewards/margins`` (chosen - rejected), each [B]."""
    chosen, rejected = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return dict(zip(REWARD_METRICS, (chosen, rejected, (chosen > rejected).float(), chosen - rejected)))


class PairwiseModule(FineTuneModule):
    """Base of modules trained on batches of preference pairs (:class:`lit_ft.data.PairCollator`: B chosen
    sequences, then their B rejected ones, as padded rows or back to back in one padding-free row; or each pair as one
    shared-prompt sequence, where :func:`~lit_ft.data.batch.sequence_ids` tells the answers apart).

    A subclass implements :meth:`pair_losses`. The optimised loss is the mean over all pairs of an optimizer
    step: the base class's accumulation window counts pairs instead of tokens (``loss_unit = "pairs"``, and
    ``train_loss_tokens`` counts pairs).

    Logged: ``train/loss`` (window mean), ``train/<metric>`` (micro-batch means), ``val/loss`` and ``val/<metric>``
    (means over all validation pairs) for each name in ``metric_names``. Step outputs carry ``loss`` (the
    optimised scalar), ``example_metrics`` (``{"loss": [B], <metric>: [B], ...}``, per pair) and
    ``example_task_ids`` [B] (each pair's task type id), so a callback can split them per task type.
    """

    loss_unit = "pairs"
    metric_names: tuple[str, ...] = REWARD_METRICS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.val_metrics = nn.ModuleDict({_key(name): MeanMetric() for name in self.metric_names})

    def pair_losses(self, batch: dict[str, torch.Tensor], split: str) -> StepOutput:
        """``per_example_loss`` [B] and each of ``metric_names`` [B] for a batch of B pairs from ``split``."""
        raise NotImplementedError

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> tuple[torch.Tensor, StepOutput]:
        """Per-pair losses [B] and the step output (``example_metrics``, ``example_task_ids``)."""
        out = self.pair_losses(batch, split)
        losses = out.pop("per_example_loss")
        metrics = {"loss": losses.detach(), **{name: out[name] for name in self.metric_names}}
        return losses, {"example_metrics": metrics, "example_task_ids": sequence_task_ids(batch)[: len(losses)]}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        losses, out = self._step(batch, "train")
        pairs = torch.tensor(float(len(losses)), device=losses.device)
        for name in self.metric_names:
            value = out["example_metrics"][name].mean()
            self.log(stage_metric("train", name), value, on_step=True, on_epoch=False, batch_size=len(losses))
        return {"loss": self.loss_to_backward(losses.sum(), pairs), **out}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        losses, out = self._step(batch, "val")
        self.val_loss.update(losses)
        for name in self.metric_names:
            self.val_metrics[_key(name)].update(out["example_metrics"][name])
        return {"loss": losses.mean(), **out}

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        for metric in self.val_metrics.values():
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log(VAL_LOSS, self.val_loss.compute(), prog_bar=True, sync_dist=False)
        for name in self.metric_names:
            self.log(stage_metric("val", name), self.val_metrics[_key(name)].compute(), sync_dist=False)


def _key(name: str) -> str:
    return name.replace("/", "_")

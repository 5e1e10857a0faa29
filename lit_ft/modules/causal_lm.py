"""A causal LM trained on token-level next-token loss: the token losses (the LM head only where targets carry loss),
their reduction to the mean over an optimizer step's loss tokens, and the validation loss and perplexity.

Subclassing points, besides :class:`~lit_ft.modules.fine_tune.FineTuneModule`'s:
- :meth:`token_losses`     batch -> per-token losses, loss mask and task ids
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel

from lit_ft.data.batch import loss_tokens
from lit_ft.losses import masked_head_cross_entropy, masked_mean, shift_labels, token_cross_entropy
from lit_ft.modules.fine_tune import FineTuneModule, StepOutput
from lit_ft.utils.metric_names import VAL_LOSS, VAL_PPL
from lit_ft.utils.protocols import TaskData


class CausalLMModule(FineTuneModule):
    """Train a causal LM on token-level next-token loss, averaged over all the loss-carrying tokens of an
    optimizer step (:meth:`~lit_ft.modules.fine_tune.FineTuneModule.normalize_gradients`).

    Args:
        head_on_loss_tokens: compute the LM head only where targets carry loss (same loss and gradients, less
            compute and memory); turn off for models whose head does more than a linear projection
            (logit soft-capping or scaling).
        head_chunk_tokens: with ``head_on_loss_tokens``, score more loss tokens than this in chunks whose logits
            are recomputed in backward (peak memory: one [chunk, vocabulary] block of logits).
        task_loss_weights: task type -> weight ``w`` of its tokens in the training loss (others 1), which becomes
            ``sum_t w(task_t) * loss_t / N`` over the step's N loss tokens: the multi-task sum
            ``sum_task w_task * L_task`` with each task's share of the tokens kept. A task whose answers are a few
            tokens (a label) gets a few tokens' say among long answers; a weight gives it more. The validation
            loss stays the plain token mean, comparable across weightings.
        (others: see :class:`~lit_ft.modules.fine_tune.FineTuneModule`)
    """

    def __init__(
        self,
        *args,
        head_on_loss_tokens: bool = True,
        head_chunk_tokens: int | None = 1024,
        task_loss_weights: Mapping[str, float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.head_on_loss_tokens, self.head_chunk_tokens = head_on_loss_tokens, head_chunk_tokens
        negative = {task: weight for task, weight in (task_loss_weights or {}).items() if not weight >= 0}
        if negative:
            raise ValueError(f"task_loss_weights must be >= 0, got {negative}")
        self.task_loss_weights = dict(task_loss_weights or {})
        self._task_weight_table: torch.Tensor | None = None  # weight per task id, built when training starts

    def _causal_lm(self, model: PreTrainedModel | None = None) -> PreTrainedModel:
        """The ``*ForCausalLM`` model under any peft wrapper (adapters stay active inside it)."""
        model = model or self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def token_losses(
        self, batch: dict[str, torch.Tensor], model: PreTrainedModel | None = None, with_hidden: bool = False
    ) -> StepOutput:
        """``per_token_loss``, ``loss_mask`` and ``task_ids``, all [B, T-1] aligned with the shifted targets,
        of ``model`` (default: the trained one; a frozen reference model, say); ``with_hidden`` adds ``hidden``
        [B, T-1, H], the last hidden state at each position that predicts a target (a value head reads it).

        With ``head_on_loss_tokens`` the LM head runs only on positions that carry loss
        (:func:`masked_head_cross_entropy`); otherwise on full logits from :meth:`forward`. Under FSDP2 the
        model's own weights (embeddings, head) are gathered only by its ``forward``, so it runs whole there.
        """
        model = model or self.model
        hidden = None
        if self._head_on_loss_tokens(model):
            causal_lm = self._causal_lm(model)
            hidden = causal_lm.get_decoder()(**self._model_inputs(batch)).last_hidden_state
            per_token_loss, loss_mask = masked_head_cross_entropy(
                hidden, causal_lm.get_output_embeddings(), batch["labels"], self.head_chunk_tokens
            )
        elif with_hidden:
            output = model(**self._model_inputs(batch), output_hidden_states=True)
            hidden = output.hidden_states[-1]
            per_token_loss, loss_mask = token_cross_entropy(output.logits, batch["labels"])
        else:
            per_token_loss, loss_mask = token_cross_entropy(self(batch, model), batch["labels"])
        out = {"per_token_loss": per_token_loss, "loss_mask": loss_mask, "task_ids": shift_labels(batch["task_ids"])}
        return out | ({"hidden": hidden[:, :-1]} if with_hidden else {})

    def _head_on_loss_tokens(self, model: PreTrainedModel) -> bool:
        return self.head_on_loss_tokens and not isinstance(model, FSDPModule)

    def head_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The number of positions of a training batch the LM head runs on: its loss-carrying targets with
        ``head_on_loss_tokens``; None when it runs on every token. The ``Throughput`` callback counts FLOPs by it."""
        if not self._head_on_loss_tokens(self.model):
            return None
        return loss_tokens(shift_labels(batch["labels"]))

    def mean_token_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean next-token loss over a batch's loss tokens (a scalar): what EWC's Fisher is estimated on."""
        out = self.token_losses(batch)
        return masked_mean(out["per_token_loss"], out["loss_mask"])

    def on_fit_start(self) -> None:
        if self.task_loss_weights:
            names: list[str] = self.trainer.datamodule.task_names
            unknown = sorted(set(self.task_loss_weights) - set(names))
            if unknown:
                raise ValueError(
                    f"task_loss_weights names task types the data does not have: {unknown} (it has {names})"
                )
            self._task_weight_table = torch.tensor([float(self.task_loss_weights.get(n, 1.0)) for n in names])

    def token_weights(self, out: StepOutput) -> torch.Tensor:
        """[B, T-1] float: each loss token's task weight (``task_loss_weights``), 0 where no loss."""
        mask = out["loss_mask"].float()
        if self._task_weight_table is None:
            return mask
        table = self._task_weight_table.to(mask.device)
        return mask * table[out["task_ids"].clamp(min=0)]

    def on_train_start(self) -> None:
        # Not on_fit_start: sharded strategies restore a checkpoint (and EWC's Fisher in it) after that hook.
        if self.ewc is None or self.ewc.fisher:
            return
        if self.trainer.ckpt_path is not None:
            raise RuntimeError(
                "Resuming with EWC, but the checkpoint holds no Fisher information, and the model has trained away "
                "from the weights it must be estimated at: resume without ewc, or start a new run."
            )
        datamodule: TaskData = self.trainer.datamodule
        self.ewc.estimate(self, datamodule.tokenizer, self.mean_token_loss)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        out = self.token_losses(batch)
        # Summed here, divided by the step's loss tokens (all micro-batches and ranks) in normalize_gradients.
        loss_sum = (out["per_token_loss"] * self.token_weights(out)).sum()
        return {"loss": self.loss_to_backward(loss_sum, out["loss_mask"].sum()), **out}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        out = self.token_losses(batch)
        tokens = out["loss_mask"].sum()
        loss = (out["per_token_loss"] * out["loss_mask"]).sum() / tokens.clamp(min=1)
        self.val_loss.update(loss, weight=tokens)  # token-weighted over the whole validation set and all ranks
        return {"loss": loss, **out}

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log(VAL_LOSS, loss, prog_bar=True, sync_dist=False)
        self.log(VAL_PPL, torch.exp(loss), sync_dist=False)

"""Base LightningModule for causal-LM fine-tuning: model building, token-loss reduction, optimisation, logging.

Subclassing points (override one, keep the rest):
- :meth:`pretrained_model` the model as the factory gives it (before freezing and adapters)
- :meth:`build_model`     the ``transformers`` model (called from ``configure_model``, so strategies can shard it)
- :meth:`forward`          batch -> logits
- :meth:`token_losses`     batch -> per-token losses, loss mask and task ids
- :meth:`log_step_metrics` what a training step logs
- :meth:`export`           what is saved at the end (HF model; adapter and merged model for adapter runs)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.distributed.fsdp import FSDPModule
from torchmetrics import MeanMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.losses import IGNORE_INDEX, l2_sp_penalty, masked_head_cross_entropy, shift_labels, token_cross_entropy
from lit_ft.models.export import consolidated_model, export_model
from lit_ft.models.layers import decoder_layers
from lit_ft.modules.optim import LRScaling, OptimizerInBackward, build_optimizer, clip_by_global_norm, upcast_trainable
from lit_ft.modules.schedules import warmup_cosine_schedule
from lit_ft.utils.distributed import is_sharded, unwrapped_name
from lit_ft.utils.rng import ResumableRNG

log = logging.getLogger(__name__)


ModelFactory = Callable[[], PreTrainedModel]
ModelTransform = Callable[[PreTrainedModel], PreTrainedModel]
StepOutput = dict[str, torch.Tensor]


class CausalLMModule(L.LightningModule):
    """Train a causal LM on token-level next-token loss.

    The optimised loss is the mean over all loss-carrying tokens of an optimizer step: each micro-batch
    back-propagates its summed token loss, and before the step the gradients are divided by the number of
    loss tokens in the whole accumulation window (over all ranks). A plain mean of micro-batch means would
    over-weight short examples.

    Args:
        model: builds the pretrained model (for example ``partial(load_model, "smollm2-135m-instruct")``).
        optimizer: ``partial`` of an optimizer class taking parameter groups (AdamW by default).
        scheduler: ``partial`` taking ``(optimizer, num_training_steps)``; stepped every optimizer step.
        weight_decay: applied to weight matrices only (see :func:`decay_groups`).
        freeze: freezes part of the model (``lit_ft.models.Freeze``: train only the top layers / the head).
        adapter: wraps the model in trainable adapters (``lit_ft.models.LoRA``); the base stays frozen.
        head_on_loss_tokens: compute the LM head only where targets carry loss (same loss and gradients, less
            compute and memory); turn off for models whose head does more than a linear projection
            (logit soft-capping or scaling).
        layer_lr_decay: discriminative learning rates: each decoder layer's LR is this factor times the one
            above it, the head at the base LR, the embeddings lowest (see :func:`decay_groups`).
        lr_scaling: maps the global batch size to an LR multiplier (``lit_ft.modules.optim.LRScaling``).
        l2sp: strength ``lambda`` of L2-SP, ``lambda * ||theta - theta_0||^2`` over the trainable weights, pulling
            them toward their values when the model was built (the pretrained weights).
        head_chunk_tokens: with ``head_on_loss_tokens``, score more loss tokens than this in chunks whose logits
            are recomputed in backward (peak memory: one [chunk, vocabulary] block of logits).
        compile: compile each decoder block with ``torch.compile`` (regional compilation: one block is compiled
            once and reused by all, with dynamic sequence lengths); the first steps pay the compile time. A dict
            is passed to ``torch.compile`` (for example ``{"mode": "max-autotune"}``).
        optimizer_in_backward: update each parameter inside backward as soon as its gradient is complete, and free
            that gradient (:class:`lit_ft.modules.optim.OptimizerInBackward`): the gradients of all the weights are
            never alive together (each is divided by the step's loss tokens just before use). Single device,
            no gradient accumulation, no gradient clipping (``trainer.gradient_clip_val=null``), no L2-SP, no fp16
            loss scaling: each is refused with what to change (:func:`optimizer_in_backward_refusal`).
    """

    # What the loss is averaged over, and what `train_loss_tokens` counts (preference modules: "pairs").
    loss_unit = "tokens"

    def __init__(
        self,
        model: ModelFactory,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        weight_decay: float = 0.0,
        freeze: ModelTransform | None = None,
        adapter: ModelTransform | None = None,
        head_on_loss_tokens: bool = True,
        layer_lr_decay: float | None = None,
        lr_scaling: LRScaling | None = None,
        l2sp: float = 0.0,
        head_chunk_tokens: int | None = 1024,
        compile: bool | dict[str, Any] = False,
        optimizer_in_backward: bool = False,
    ) -> None:
        super().__init__()
        # No save_hyperparameters: the arguments are factories, which would make checkpoints need pickle
        # (no `weights_only` loading). The resolved Hydra config is saved beside the checkpoints instead.
        self.model_factory = model
        self.optimizer_factory = optimizer or (lambda params: torch.optim.AdamW(params, lr=2e-5))
        self.scheduler_factory = scheduler or warmup_cosine_schedule
        self.weight_decay = weight_decay
        self.freeze, self.adapter = freeze, adapter
        self.head_on_loss_tokens = head_on_loss_tokens
        if layer_lr_decay is not None and not 0 < layer_lr_decay <= 1:
            raise ValueError(
                f"layer_lr_decay={layer_lr_decay}: must be in (0, 1] (each layer's LR a fraction of the one above)"
            )
        self.layer_lr_decay, self.lr_scaling, self.l2sp = layer_lr_decay, lr_scaling, l2sp
        self._l2sp_anchors: dict[str, torch.Tensor] = {}  # theta_0, not in the state dict (rebuilt on resume)
        self.head_chunk_tokens = head_chunk_tokens
        self.compile = compile
        self.optimizer_in_backward = optimizer_in_backward
        self._updated_in_backward = False  # whether the last backward ran (and so updated the weights)
        # Checkpoints of partly frozen models hold only the trainable weights, so loading one is not strict.
        self.strict_loading = freeze is None and adapter is None
        self.model: PreTrainedModel | None = None
        self.trainable_names: set[str] = set()
        self.val_loss = MeanMetric()
        self._window_loss = torch.zeros(())
        self._window_tokens = torch.zeros(())
        self.train_loss_tokens = 0  # loss-carrying tokens optimised so far, all ranks; kept in checkpoints
        self.rng = ResumableRNG()  # dropout continues after a resume as if the run had not stopped
        self.trainable_params = self.total_params = 0  # counted before a strategy shards the model
        self.base_model_name: str | None = None

    # --- model ---------------------------------------------------------------------------------------------
    def pretrained_model(self) -> PreTrainedModel:
        """The pretrained model from the factory (a subclass may ask it for another head)."""
        return self.model_factory()

    def build_model(self) -> PreTrainedModel:
        """The model to train: the pretrained model, partly frozen and/or wrapped in adapters as configured."""
        model = self.pretrained_model()
        # The name the exports record (peft's base_model_name_or_path, the model card): load_model's alias, hub id
        # or folder; None for a model built in the run (a random tiny model, an earlier curriculum stage's).
        self.base_model_name = getattr(model, "name_or_path", None) or None
        if self.freeze is not None:
            model = self.freeze(model)
        if self.adapter is not None:
            model = self.adapter(model)
        upcast_trainable(model)
        if self.compile:
            options = {"dynamic": True, **(self.compile if isinstance(self.compile, dict) else {})}
            for layer in decoder_layers(model):
                layer.compile(**options)
        return model.train()  # from_pretrained returns eval mode, which would switch off (LoRA) dropout

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = self.build_model()
        trainable = self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = self.total_params = sum(p.numel() for p in self.model.parameters())
        # What trains, fixed at build: callbacks (gradual unfreezing) may freeze some of it for a while.
        self.trainable_names = {unwrapped_name(n) for n, p in self.named_parameters() if p.requires_grad}
        if self.l2sp:
            self._l2sp_anchors = {
                unwrapped_name(n): p.detach().clone() for n, p in self.named_parameters() if p.requires_grad
            }
        log.info("Trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    @staticmethod
    def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "position_ids" in batch and "attention_mask" in batch:
            # transformers takes example boundaries from position_ids only when no attention_mask is given
            raise ValueError("a packed batch (position_ids) must not carry an attention_mask: attention would leak")
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch.get("attention_mask"),
            "position_ids": batch.get("position_ids"),
            "use_cache": False,  # a cache would disable transformers' packed-sequence masking
        }

    def forward(self, batch: dict[str, torch.Tensor], model: PreTrainedModel | None = None) -> torch.Tensor:
        """Logits [B, T, V] of ``model`` (default: the trained one) for a padded (``attention_mask``) or packed
        (``position_ids``) batch."""
        return (model or self.model)(**self._model_inputs(batch)).logits

    def _causal_lm(self, model: PreTrainedModel | None = None) -> PreTrainedModel:
        """The ``*ForCausalLM`` model under any peft wrapper (adapters stay active inside it)."""
        model = model or self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    # --- loss ------------------------------------------------------------------------------------------------
    def token_losses(self, batch: dict[str, torch.Tensor], model: PreTrainedModel | None = None) -> StepOutput:
        """``per_token_loss``, ``loss_mask`` and ``task_ids``, all [B, T-1] aligned with the shifted targets,
        of ``model`` (default: the trained one; a frozen reference model, say).

        With ``head_on_loss_tokens`` the LM head runs only on positions that carry loss
        (:func:`masked_head_cross_entropy`); otherwise on full logits from :meth:`forward`. Under FSDP2 the
        model's own weights (embeddings, head) are gathered only by its ``forward``, so it runs whole there.
        """
        model = model or self.model
        if self._head_on_loss_tokens(model):
            causal_lm = self._causal_lm(model)
            hidden = causal_lm.get_decoder()(**self._model_inputs(batch)).last_hidden_state
            per_token_loss, loss_mask = masked_head_cross_entropy(
                hidden, causal_lm.get_output_embeddings(), batch["labels"], self.head_chunk_tokens
            )
        else:
            per_token_loss, loss_mask = token_cross_entropy(self(batch, model), batch["labels"])
        return {"per_token_loss": per_token_loss, "loss_mask": loss_mask, "task_ids": shift_labels(batch["task_ids"])}

    def _head_on_loss_tokens(self, model: PreTrainedModel) -> bool:
        return self.head_on_loss_tokens and not isinstance(model, FSDPModule)

    def head_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The number of positions of a training batch the LM head runs on: its loss-carrying targets with
        ``head_on_loss_tokens``; None when it runs on every token. The ``Throughput`` callback counts FLOPs by it."""
        if not self._head_on_loss_tokens(self.model):
            return None
        return (shift_labels(batch["labels"]) != IGNORE_INDEX).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        out = self.token_losses(batch)
        loss_sum = (out["per_token_loss"] * out["loss_mask"]).sum()
        tokens = out["loss_mask"].sum()
        self.add_to_window(loss_sum, tokens)
        return {"loss": self.loss_for_backward(loss_sum, tokens), **out}

    def loss_for_backward(self, loss_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """What a training step back-propagates, given its summed loss and the ``count`` it is a sum over.

        Normally the sum itself: on_before_optimizer_step turns the window's gradients into a mean. Strategies
        whose engine owns the gradients and the optimizer step (DeepSpeed: ZeRO keeps gradients in partitioned
        buffers, so ``param.grad`` cannot be rescaled) get the sum divided now by this micro-batch's count over
        all ranks. The engine averages over ranks, and the loss is divided by ``accumulate`` twice (Lightning's
        closure and the engine), hence ``world_size * accumulate / global_count``: exact without accumulation,
        a mean of per-micro-batch means with it.
        """
        if not self.trainer.strategy.handles_gradient_accumulation:
            return loss_sum
        global_count = self.trainer.strategy.reduce(count.detach().float(), reduce_op="sum")
        factor = self.trainer.world_size * self.trainer.accumulate_grad_batches / global_count.clamp(min=1.0)
        return loss_sum * factor

    def add_to_window(self, loss_sum: torch.Tensor, count: torch.Tensor) -> None:
        """Add a micro-batch's summed loss and its number of loss units (tokens here) to the accumulation window."""
        self._window_loss = self._window_loss.to(loss_sum.device) + loss_sum.detach()
        self._window_tokens = self._window_tokens.to(loss_sum.device) + count

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide gradients by the loss tokens of the accumulation window across ranks, and log the window loss.

        Lightning scaled each micro-batch loss by 1/accumulate and DDP/FSDP average gradients over ranks,
        so the factor is ``accumulate * world_size / global_tokens``. (Under DeepSpeed this runs after every
        micro-batch and the loss was normalised before backward: see :meth:`loss_for_backward`.)
        """
        totals = torch.stack([self._window_loss, self._window_tokens.float()])
        window_loss, window_tokens = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        stepping = True
        if self.optimizer_in_backward:  # backward has divided the gradients and updated the weights
            stepping = self._updated_in_backward
        elif not self.trainer.strategy.handles_gradient_accumulation:
            scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / max(window_tokens, 1.0)
            stepping = False  # no gradient left: a DivergenceGuard dropped this step, its tokens are not trained on
            for parameter in self.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
                    stepping = True
            if self.l2sp and stepping:
                self.add_l2sp_gradient()
        self.train_loss_tokens += int(window_tokens) if stepping else 0
        self.log_step_metrics(window_loss / max(window_tokens, 1.0), optimizer)
        self._window_loss = torch.zeros((), device=self._window_loss.device)
        self._window_tokens = torch.zeros((), device=self._window_tokens.device)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip by global norm where Lightning's plugins refuse to (:func:`~lit_ft.modules.optim.clip_by_global_norm`),
        else as Lightning does."""
        if not clip_by_global_norm(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Back-propagate. With ``optimizer_in_backward`` backward also updates the weights, so what
        :meth:`on_before_optimizer_step` does to gradients happens in it: each gradient is divided by the loss
        tokens of the step (one micro-batch on one device: the rest is refused) just before its parameter's update,
        the same operation as the normal path's. A step whose loss is NaN/inf skips backward, so no weight changes
        (a DivergenceGuard counts the step as skipped); non-finite gradients of a finite loss cannot be caught."""
        self._updated_in_backward = False
        if self.optimizer_in_backward:
            if not torch.isfinite(loss.detach()).all():
                log.warning("Step %d: non-finite loss, backward and its update skipped.", self.trainer.global_step + 1)
                return
            self.trainer.optimizers[0].grad_scale = 1.0 / max(float(self._window_tokens), 1.0)
        super().backward(loss, *args, **kwargs)
        self._updated_in_backward = True

    @torch.no_grad()
    def add_l2sp_gradient(self) -> None:
        """Add the gradient of ``l2sp * ||theta - theta_0||^2``, ``2 * l2sp * (theta - theta_0)``, to each trainable
        weight's (already token-averaged) gradient, and log the penalty as ``train/l2sp``."""
        if is_sharded(self):
            raise ValueError("L2-SP needs whole parameters; it does not support sharded (FSDP/ZeRO-3) training")
        named = ((unwrapped_name(n), p) for n, p in self.named_parameters() if p.requires_grad)
        params = {n: p for n, p in named if n in self._l2sp_anchors}
        for name, parameter in params.items():
            self._l2sp_anchors[name] = self._l2sp_anchors[name].to(parameter.device)  # once, after device moves
            pull = 2 * self.l2sp * (parameter - self._l2sp_anchors[name])
            parameter.grad = pull if parameter.grad is None else parameter.grad.add_(pull)
        penalty = l2_sp_penalty(list(params.values()), [self._l2sp_anchors[n] for n in params])
        self.log("train/l2sp", self.l2sp * penalty, rank_zero_only=True)

    def log_step_metrics(self, loss: float, optimizer: torch.optim.Optimizer) -> None:
        self.log("train/loss", loss, prog_bar=True, rank_zero_only=True)
        group = optimizer.param_groups[0]  # with layer_lr_decay, the top depth that trains: divide out its scale
        self.log("lr", group["lr"] / group.get("lr_scale", 1.0), rank_zero_only=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        out = self.token_losses(batch)
        tokens = out["loss_mask"].sum()
        loss = (out["per_token_loss"] * out["loss_mask"]).sum() / tokens.clamp(min=1)
        self.val_loss.update(loss, weight=tokens)  # token-weighted over the whole validation set and all ranks
        return {"loss": loss, **out}

    def on_validation_epoch_start(self) -> None:
        # Reset here, under the same grad mode as the updates: states made under inference_mode (a
        # `trainer.validate` before `fit`) cannot be updated in place later.
        self.val_loss.reset()

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_loss_tokens"] = self.train_loss_tokens
        self.rng.save(checkpoint)
        if not self.strict_loading:  # frozen weights come from the pretrained model on resume
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in self.trainable_names}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_loss_tokens = checkpoint.get("train_loss_tokens", 0)
        self.rng.load(checkpoint)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.rng.restore_if_pending()

    # --- optimisation --------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimizer(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            self.weight_decay,
            self.layer_lr_decay,
            self.lr_scaling,
            self.l2sp,
            self.optimizer_in_backward,
        )

    def on_train_end(self) -> None:
        for optimizer in self.trainer.optimizers:  # later backward passes (another fit) must not update
            if isinstance(optimizer, OptimizerInBackward):
                optimizer.remove_hooks()

    # --- export ----------------------------------------------------------------------------------------------
    def export(self, output_dir: Path, tokenizer: PreTrainedTokenizerBase) -> dict[str, str | None]:
        """Save the trained model with its tokenizer in Hugging Face format (and the adapter, for adapter runs); return
        the folders written and the base model's name (:func:`~lit_ft.models.export.export_model`). In a distributed
        run every rank calls this (sharded weights are gathered first) and rank 0 writes."""
        model = consolidated_model(self._trainer, self.model, self.build_model)
        if model is not None and self.adapter is not None:
            self.model = None  # the export merges the adapters into their base: the last step of a run
        return export_model(output_dir, model, tokenizer, self.adapter is not None, self.base_model_name)

"""Base LightningModule of every lit-ft module: builds the model, makes the optimised loss a mean over each
optimizer step, optimises, logs, checkpoints and exports. Subclasses say what the loss is.

Subclassing points (override one, keep the rest):
- :meth:`pretrained_model` the model as the factory gives it (before freezing and adapters)
- :meth:`build_model`     the ``transformers`` model (called from ``configure_model``, so strategies can shard it)
- :meth:`forward`          batch -> logits
- :meth:`log_step_metrics` what a training step logs
- :meth:`export`           what is saved at the end (HF model; adapter and merged model for adapter runs)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torchmetrics import MeanMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.models.attention import VARLEN_KEYS
from lit_ft.models.export import consolidated_model, export_model
from lit_ft.models.layers import decoder_layers
from lit_ft.modules.ewc import EWC
from lit_ft.modules.l2sp import L2SP
from lit_ft.modules.mixout import Mixout
from lit_ft.modules.optim import LRScaling, OptimizerInBackward, build_optimizer, clip_by_global_norm, upcast_trainable
from lit_ft.modules.schedules import warmup_cosine_schedule
from lit_ft.utils.distributed import unwrapped_name
from lit_ft.utils.lightning_compat import attached_trainer
from lit_ft.utils.metric_names import LR, TRAIN_LOSS
from lit_ft.utils.rng import ResumableRNG

log = logging.getLogger(__name__)


ModelFactory = Callable[[], PreTrainedModel]
ModelTransform = Callable[[PreTrainedModel], PreTrainedModel]
StepOutput = dict[str, torch.Tensor]


class FineTuneModule(L.LightningModule):
    """Fine-tune a ``transformers`` model on a loss that is a mean over loss units (``loss_unit``: tokens; pairs
    for preference modules).

    The optimised loss is the mean over all the loss units of an optimizer step: each micro-batch back-propagates
    its summed loss (:meth:`loss_to_backward`), and :meth:`normalize_gradients` turns the gradients into those of
    the mean over the whole accumulation window, over all ranks. A plain mean of micro-batch means would
    over-weight short examples. A subclass's ``training_step`` returns ``{"loss": self.loss_to_backward(sum, units)}``.

    Args:
        model: builds the pretrained model (for example ``partial(load_model, "smollm2-135m-instruct")``).
        optimizer: ``partial`` of an optimizer class taking parameter groups (AdamW by default).
        scheduler: ``partial`` taking ``(optimizer, num_training_steps)``; stepped every optimizer step.
        weight_decay: applied to weight matrices only (see :func:`~lit_ft.modules.optim.decay_groups`).
        freeze: freezes part of the model (``lit_ft.models.Freeze``: train only the top layers / the head).
        adapter: wraps the model in trainable adapters (``lit_ft.models.LoRA``); the base stays frozen, so
            ``freeze`` is refused beside it.
        layer_lr_decay: discriminative learning rates: each decoder layer's LR is this factor times the one
            above it, the head at the base LR, the embeddings lowest (see :func:`~lit_ft.modules.optim.decay_groups`).
        lr_scaling: maps the global batch size to an LR multiplier (``lit_ft.modules.optim.LRScaling``).
        l2sp: strength ``lambda`` of L2-SP, ``lambda * ||theta - theta_0||^2`` over the trainable weights, pulling
            them toward their values when the model was built (the pretrained weights).
        ewc: Elastic Weight Consolidation (:class:`~lit_ft.modules.ewc.EWC`): L2-SP weighted by each weight's Fisher
            information on general text, estimated when training starts (by modules with an LM loss).
        mixout: puts each trainable weight of the chosen linear layers back to its starting value with probability
            ``p`` while training (:class:`~lit_ft.modules.mixout.Mixout`), applied when the model is built.
        compile: compile each decoder block with ``torch.compile`` (regional compilation: one block is compiled
            once and reused by all, with dynamic sequence lengths); the first steps pay the compile time. A dict
            is passed to ``torch.compile`` (for example ``{"mode": "max-autotune"}``).
        optimizer_in_backward: update each parameter inside backward as soon as its gradient is complete, and free
            that gradient (:class:`lit_ft.modules.optim.OptimizerInBackward`): the gradients of all the weights are
            never alive together (each is divided by the step's loss units just before use). Single device,
            no gradient accumulation, no gradient clipping (``trainer.gradient_clip_val=null``), no L2-SP or EWC, no
            fp16 loss scaling: each is refused with what to change
            (:func:`~lit_ft.modules.optim.optimizer_in_backward_refusal`).
    """

    # What the loss is averaged over, and what `train_loss_tokens` counts (preference modules: "pairs").
    loss_unit = "tokens"
    # Constructor arguments added when an already trained model is wrapped for evaluation (eval.py with a model
    # folder: no adapter, nothing trained): a module whose training needs more than the model turns that off here.
    evaluation_arguments: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model: ModelFactory,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        weight_decay: float = 0.0,
        freeze: ModelTransform | None = None,
        adapter: ModelTransform | None = None,
        layer_lr_decay: float | None = None,
        lr_scaling: LRScaling | None = None,
        l2sp: float = 0.0,
        ewc: EWC | None = None,
        mixout: Mixout | None = None,
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
        if freeze is not None and adapter is not None:
            raise ValueError(
                "peft and freeze are both set: peft freezes the whole base model itself, so the freeze choice would "
                "be lost. Use one of them (to train whole modules beside the adapters, set peft.modules_to_save)."
            )
        self.freeze, self.adapter = freeze, adapter
        if layer_lr_decay is not None and not 0 < layer_lr_decay <= 1:
            raise ValueError(
                f"layer_lr_decay={layer_lr_decay}: must be in (0, 1] (each layer's LR a fraction of the one above)"
            )
        self.layer_lr_decay, self.lr_scaling, self.l2sp = layer_lr_decay, lr_scaling, l2sp
        self.regularizer = L2SP(l2sp) if l2sp else None
        self.ewc, self.mixout = ewc, mixout
        self.compile = compile
        self.optimizer_in_backward = optimizer_in_backward
        # Checkpoints of partly frozen models hold only the trainable weights, so loading one is not strict.
        self.strict_loading = freeze is None and adapter is None
        self.model: PreTrainedModel | None = None
        self.trainable_names: set[str] = set()
        self.val_loss = MeanMetric()
        self._window_loss = torch.zeros(())  # summed loss of the optimizer step's micro-batches so far
        self._window_units = torch.zeros(())  # and their loss units
        # Set by whatever drops this optimizer step's update (a DivergenceGuard, a non-finite loss under
        # optimizer_in_backward): the step's units are then not counted as trained, nor its micro-batches in the
        # per-task training metrics. Reset at every step.
        self.step_dropped = False
        # Set by whatever puts back the weights of an earlier step (early stopping's best check, when training
        # ends): checks after training label their results with it (lit_ft.callbacks.steps.weights_step).
        self.restored_step: int | None = None
        self.train_loss_tokens = 0  # loss units optimised so far, all ranks; kept in checkpoints
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
        if self.mixout is not None:
            mixed = self.mixout.apply(self.model)
            log.info("mixout (p=%s) on %d linear layers, e.g. %s", self.mixout.p, len(mixed), mixed[0])
        trainable = self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = self.total_params = sum(p.numel() for p in self.model.parameters())
        # What trains, fixed at build: callbacks (gradual unfreezing) may freeze some of it for a while.
        self.trainable_names = {unwrapped_name(n) for n, p in self.named_parameters() if p.requires_grad}
        if self.regularizer is not None:
            self.regularizer.anchor(self)
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
            # padding-free batches: flash attention's varlen arguments, so no layer derives them from position_ids
            **{key: batch[key] for key in VARLEN_KEYS if key in batch},
        }

    def forward(self, batch: dict[str, torch.Tensor], model: PreTrainedModel | None = None) -> torch.Tensor:
        """Logits of ``model`` (default: the trained one; [B, T, V] for a causal LM) for a padded
        (``attention_mask``) or packed (``position_ids``) batch."""
        return (model or self.model)(**self._model_inputs(batch)).logits

    # --- the optimised loss: a mean over the optimizer step's loss units ------------------------------------------
    def mean_scale(self, units: torch.Tensor | float) -> torch.Tensor:
        """``accumulate * world_size / units`` (units at least 1): what turns the gradients of summed losses into
        those of their mean over ``units``, given that Lightning divides each micro-batch's loss by ``accumulate``
        and DDP/FSDP (and DeepSpeed's engine) average gradients over ranks."""
        units = torch.as_tensor(units, dtype=torch.float32)
        return self.trainer.accumulate_grad_batches * self.trainer.world_size / units.clamp(min=1.0)

    def loss_to_backward(self, loss_sum: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Add a micro-batch's summed loss and its ``units`` (loss tokens, or pairs) to the optimizer step's window;
        return what the micro-batch back-propagates. The two routes that must act before backward act here (see
        the table in :meth:`normalize_gradients`)."""
        self._window_loss = self._window_loss.to(loss_sum.device) + loss_sum.detach()
        self._window_units = self._window_units.to(loss_sum.device) + units
        strategy = self.trainer.strategy
        if strategy.handles_gradient_accumulation:  # DeepSpeed: the loss, divided by the units over all ranks
            return loss_sum * self.mean_scale(strategy.reduce(units.detach().float(), reduce_op="sum"))
        if self.optimizer_in_backward:  # each gradient, just before its update (one device, no accumulation)
            self.trainer.optimizers[0].grad_scale = float(self.mean_scale(units))
        return loss_sum

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Back-propagate. With ``optimizer_in_backward`` backward also updates the weights, so a step whose loss is
        NaN/inf skips backward (no weight changes, the step is dropped; a DivergenceGuard counts it as skipped);
        non-finite gradients of a finite loss cannot be caught there."""
        if self.optimizer_in_backward and not torch.isfinite(loss.detach()).all():
            log.warning("Step %d: non-finite loss, backward and its update skipped.", self.trainer.global_step + 1)
            self.step_dropped = True
            return
        super().backward(loss, *args, **kwargs)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: torch.optim.Optimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Lightning's optimizer step, with :meth:`normalize_gradients` run right after the closure (the last
        micro-batch's forward and backward), so every ``on_before_optimizer_step`` hook (a DivergenceGuard may drop
        the step there), clipping and the update see the mean's gradients. Whether the step was dropped is read
        after it: no hook order matters."""
        units = 0

        def closure() -> Any:
            nonlocal units
            result = optimizer_closure()
            units = self.normalize_gradients(optimizer)
            return result

        self.step_dropped = False
        super().optimizer_step(epoch, batch_idx, optimizer, closure)
        self.train_loss_tokens += 0 if self.step_dropped else units
        if self.gradients_held_here:
            # Lightning frees gradients inside the next step's closure, after its forward: the step's gradients
            # would share the peak with the next forward's activations. Freed here, right after the update.
            optimizer.zero_grad(set_to_none=True)

    @property
    def gradients_held_here(self) -> bool:
        """Whether the step's complete gradients are the parameters' ``.grad`` (the plain, DDP and FSDP routes of
        :meth:`normalize_gradients`): not under DeepSpeed (its engine holds them) or with the optimizer step in
        backward (each is freed as its weight updates)."""
        return not (self.optimizer_in_backward or self.trainer.strategy.handles_gradient_accumulation)

    @torch.no_grad()
    def normalize_gradients(self, optimizer: torch.optim.Optimizer) -> int:
        """Make the step's gradients those of the mean loss over all its loss units (every micro-batch of the
        accumulation window, every rank); log that mean as ``train/loss``; return the number of units.

        Every micro-batch back-propagated its summed loss; :meth:`mean_scale` is the factor to the mean. Where it
        is applied depends on who holds the gradients:

        =====================  ==================================  ====================================================
        route                  gradients                           ``mean_scale`` applied (units counted)
        =====================  ==================================  ====================================================
        plain, DDP, FSDP       ``param.grad``, complete here       here, to every gradient (the window's, all ranks)
        DeepSpeed              the engine's (ZeRO partitions them) to each micro-batch's loss before backward, by
                                                                   :meth:`loss_to_backward` (the micro-batch's, all
                                                                   ranks: with accumulation a mean of micro-batch means)
        optimizer in backward  freed as each weight updates        per parameter inside backward, before its update
                                                                   (``grad_scale``, set by :meth:`loss_to_backward`)
        dropped step           dropped by a DivergenceGuard, or    as on its route; ``step_dropped`` is set and the
                               no backward (non-finite loss,       step's units are not counted as trained
                               optimizer in backward)              (:meth:`optimizer_step`)
        =====================  ==================================  ====================================================

        Under DeepSpeed Lightning steps after every micro-batch, so this runs (and logs) per micro-batch.
        """
        # The window's summed loss and loss units over all ranks: one all-reduce of two numbers.
        totals = torch.stack([self._window_loss, self._window_units.float()])
        window_loss, units = self.trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        # The next optimizer step's window starts from zero.
        self._window_loss = torch.zeros((), device=totals.device)
        self._window_units = torch.zeros((), device=totals.device)
        # plain/DDP/FSDP: gradients of the sums (each divided by accumulate, averaged over ranks) times mean_scale.
        # (DeepSpeed and optimizer-in-backward applied it before backward: nothing left to scale.)
        if self.gradients_held_here:
            scale = float(self.mean_scale(units))
            for parameter in self.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
            # L2-SP's and EWC's pulls toward the starting weights join the mean's gradient (refused on the other
            # routes).
            for regularizer in (self.regularizer, self.ewc):
                if regularizer is not None:
                    self.log(regularizer.metric, regularizer.add_gradient(self), rank_zero_only=True)
        # Log the loss the step optimises: the window's mean.
        self.log_step_metrics(window_loss / max(units, 1.0), optimizer)
        return int(units)

    def log_step_metrics(self, loss: float, optimizer: torch.optim.Optimizer) -> None:
        self.log(TRAIN_LOSS, loss, prog_bar=True, rank_zero_only=True)
        group = optimizer.param_groups[0]  # with layer_lr_decay, the top depth that trains: divide out its scale
        self.log(LR, group["lr"] / group.get("lr_scale", 1.0), rank_zero_only=True)

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
            self.ewc.strength if self.ewc is not None else 0.0,
        )

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

    def on_train_end(self) -> None:
        for optimizer in self.trainer.optimizers:  # later backward passes (another fit) must not update
            if isinstance(optimizer, OptimizerInBackward):
                optimizer.remove_hooks()
        if self.mixout is not None:  # a curriculum's next stage trains the model without this stage's mixout
            self.mixout.remove(self.model)

    # --- validation, checkpoints, export -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        # Reset here, under the same grad mode as the updates: states made under inference_mode (a
        # `trainer.validate` before `fit`) cannot be updated in place later.
        self.val_loss.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["train_loss_tokens"] = self.train_loss_tokens
        self.rng.save(checkpoint)
        if self.ewc is not None:  # a resumed run has trained away from theta_0: it cannot re-estimate them
            checkpoint["ewc"] = self.ewc.state_dict()
        if not self.strict_loading:  # frozen weights come from the pretrained model on resume
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in self.trainable_names}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.train_loss_tokens = checkpoint.get("train_loss_tokens", 0)
        self.rng.load(checkpoint)
        if self.ewc is not None and "ewc" in checkpoint:
            self.ewc.load_state_dict(checkpoint["ewc"])

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.rng.restore_if_pending()

    def export(self, output_dir: Path, tokenizer: PreTrainedTokenizerBase) -> dict[str, str | None]:
        """Save the trained model with its tokenizer in Hugging Face format (and the adapter, for adapter runs); return
        the folders written and the base model's name (:func:`~lit_ft.models.export.export_model`). In a distributed
        run every rank calls this (sharded weights are gathered first) and rank 0 writes."""
        model = consolidated_model(attached_trainer(self), self.model, self.build_model)
        if model is not None and self.adapter is not None:
            self.model = None  # the export merges the adapters into their base: the last step of a run
        return export_model(output_dir, model, tokenizer, self.adapter is not None, self.base_model_name)

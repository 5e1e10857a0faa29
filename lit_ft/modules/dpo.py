"""Direct preference optimisation of a causal LM (DPO and its variants), with three ways to get the reference."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from lit_ft.data.batch import IGNORE_INDEX, pair_count, sequence_ids
from lit_ft.data.preference_datamodule import PreferenceDataModule
from lit_ft.losses import completion_logps, dpo_loss, orpo_loss, per_sequence_sum, shift_labels, simpo_loss
from lit_ft.modules.causal_lm import CausalLMModule
from lit_ft.modules.fine_tune import StepOutput
from lit_ft.modules.pairwise import PairwiseModule, reward_metrics
from lit_ft.utils.metric_names import LOGP_METRICS, REWARD_METRICS

log = logging.getLogger(__name__)

LossType = Literal["sigmoid", "robust", "hinge", "ipo", "simpo", "orpo"]
Reference = Literal["precomputed", "adapter", "copy"]
REFERENCE_FREE = ("simpo", "orpo")
LENGTH_AVERAGED = ("ipo", "simpo", "orpo")
SMOOTHABLE = ("sigmoid", "robust", "simpo")  # the losses with a label-smoothing term


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Switch dropout off for the duration (the reference is a fixed function of its input)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class DPOModule(PairwiseModule, CausalLMModule):
    """Align a causal LM on preference pairs without a reward model: DPO, cDPO, robust DPO, IPO, SLiC hinge,
    and the reference-free SimPO and ORPO.

    Chosen and rejected sequences go through the model in one concatenated forward; their completion
    log-probs (summed, or length-averaged for IPO, SimPO and ORPO) feed the loss of ``loss_type``
    (:func:`lit_ft.losses.dpo_loss`, :func:`~lit_ft.losses.simpo_loss`, :func:`~lit_ft.losses.orpo_loss`),
    averaged over the pairs of an optimizer step.

    The reference log-probs come, in order of preference, from:
    - ``precomputed``: one pass over the training and validation pairs before the first step (before the
      validation that precedes training, in ``lit_ft.fit``), with the model as training starts, dropout off.
      Stored by example index (batches carry ``example_index``) and saved in checkpoints, so a resumed run
      keeps them. Costs one forward per pair, once; nothing extra in memory.
    - ``adapter``: the policy with its peft adapter switched off (``disable_adapter()``), on the fly: the
      base model, which equals the starting policy when the adapter starts at zero (fresh LoRA). No copy.
    - ``copy``: a frozen copy of the starting policy, on the fly (the model's memory twice; works for full
      fine-tuning and for adapters that do not start at zero).

    Logged (``train/`` and ``val/``): ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``,
    ``rewards/margins`` (implicit rewards ``beta * (logp - ref)``; ``beta * logp`` for SimPO and ORPO),
    ``logps/chosen``, ``logps/rejected``.

    Args:
        beta: DPO's KL strength (0.1 is usual); SimPO's reward scale (about 2); ORPO's lambda (about 0.1).
        loss_type: ``sigmoid`` (DPO; cDPO with ``label_smoothing``), ``robust``, ``hinge``, ``ipo``, ``simpo``, ``orpo``.
        label_smoothing: assumed probability ``e`` that a preference label is flipped (sigmoid, robust, simpo), in
            [0, 0.5): at 0.5 a label says nothing, and the robust loss divides by ``1 - 2e``.
        simpo_gamma: SimPO's target margin.
        sft_weight: weight of an added NLL term on the chosen answer (token mean per pair), as in RPO
            (Pang et al., 2024); 0 switches it off.
        reference: ``precomputed``, ``adapter`` or ``copy`` (ignored by SimPO and ORPO, which need none).
        (others: see :class:`lit_ft.modules.CausalLMModule`, whose token losses give the log-probs)

    The options are checked here, when the module is built (before any model is loaded): an unknown
    ``loss_type`` or ``reference``, ``label_smoothing`` outside [0, 0.5) or with a loss that has none, and
    ``reference='adapter'`` without an ``adapter`` are refused with what to change.
    """

    # An exported model has no adapter to switch off, and evaluation needs no reference: a precomputed one is only
    # computed when training starts, so none is asked for or built.
    evaluation_arguments = {"reference": "precomputed"}

    metric_names = (*REWARD_METRICS, *LOGP_METRICS)

    def __init__(
        self,
        *args,
        beta: float = 0.1,
        loss_type: LossType = "sigmoid",
        label_smoothing: float = 0.0,
        simpo_gamma: float = 1.0,
        sft_weight: float = 0.0,
        reference: Reference = "precomputed",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in get_args(LossType):
            raise ValueError(f"unknown loss_type {loss_type!r} ({', '.join(get_args(LossType))})")
        if reference not in get_args(Reference):
            raise ValueError(f"unknown reference {reference!r} ({', '.join(get_args(Reference))})")
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 0.5).")
        if label_smoothing and loss_type not in SMOOTHABLE:
            raise ValueError(
                f"label_smoothing={label_smoothing} has no meaning for loss_type={loss_type} "
                f"(only {', '.join(SMOOTHABLE)} have a smoothing term)."
            )
        if reference == "adapter" and loss_type not in REFERENCE_FREE and self.adapter is None:
            raise ValueError(
                "reference=adapter disables the LoRA adapter to get the reference, but there is none: add peft=lora "
                "(a peft adapter), or use reference=precomputed (or copy)."
            )
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.simpo_gamma, self.sft_weight = simpo_gamma, sft_weight
        self.reference = None if loss_type in REFERENCE_FREE else reference
        self.average = loss_type in LENGTH_AVERAGED
        self.reference_model: nn.Module | None = None
        self.cached_reference_logps: dict[str, torch.Tensor] = {}  # split -> [N, 2] (chosen, rejected)
        if self.reference == "copy":
            self.strict_loading = False  # the frozen copy is rebuilt from the pretrained model, not checkpointed

    # --- model and reference -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        super().configure_model()
        if self.reference == "copy" and self.reference_model is None:
            self.reference_model = copy.deepcopy(self.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> DPOModule:
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # Lightning switches every submodule to train mode; the copy stays fixed
        return self

    def logps(self, batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """Completion log-probs [2B] of ``model`` (default: the policy), chosen then rejected (averaged per token
        for IPO, SimPO and ORPO). The LM head runs on completion tokens only when ``head_on_loss_tokens``."""
        out = self.token_losses(batch, model)
        return completion_logps(out["per_token_loss"], out["loss_mask"], self.average, **self.target_sequences(batch))

    @staticmethod
    def target_sequences(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """How shifted targets [R, T-1] group into sequences, as :func:`per_sequence_sum` takes it: a padded
        batch's rows (nothing to pass); a one-row batch's 2B sequences (padding-free segments, or the chosen and
        rejected answers of shared-prompt sequences: :func:`~lit_ft.data.batch.sequence_ids`)."""
        if batch.get("position_ids") is None:
            return {}
        return {"sequence_ids": shift_labels(sequence_ids(batch)), "sequences": 2 * pair_count(batch)}

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        """The reference's completion log-probs [2B] for a batch of ``split``, by the configured strategy."""
        if self.reference == "precomputed":
            if split not in self.cached_reference_logps:
                raise RuntimeError(f"no precomputed reference log-probs for the '{split}' pairs")
            pairs = self.cached_reference_logps[split][batch["example_index"].cpu()].to(self.device)
            return torch.cat([pairs[:, 0], pairs[:, 1]])
        if self.reference == "adapter":
            with eval_mode(self.model), self.model.disable_adapter():
                return self.logps(batch)
        return self.logps(batch, self.reference_model)

    def precompute_reference_logps(self) -> None:
        """Fill :attr:`cached_reference_logps` for the datamodule's training and validation pairs (once)."""
        if self.reference != "precomputed":
            return
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, PreferenceDataModule):
            raise ValueError("reference='precomputed' needs a PreferenceDataModule; use 'adapter' or 'copy' otherwise")
        pairs = {"train": datamodule.train_examples, "val": datamodule.val_examples}
        splits = [split for split, examples in pairs.items() if examples]
        if all(s in self.cached_reference_logps for s in splits):
            return
        if self.trainer.ckpt_path is not None:
            raise RuntimeError(
                "Resuming with reference='precomputed', but the checkpoint holds no reference log-probs and the "
                "model has trained since; resume with the strategy the run started with."
            )
        started = time.perf_counter()
        # Lightning's validation runs under inference mode; the cache must stay usable in training steps.
        with torch.inference_mode(False), torch.no_grad(), eval_mode(self.model):
            for split in splits:
                cache = torch.zeros(len(pairs[split]), 2)
                for batch in datamodule.ordered_dataloader(split):
                    batch = move_data_to_device(batch, self.device)
                    chosen, rejected = self.logps(batch).float().cpu().chunk(2)
                    cache[batch["example_index"].cpu()] = torch.stack([chosen, rejected], dim=1)
                self.cached_reference_logps[split] = cache
        sizes = ", ".join(f"{len(self.cached_reference_logps[s])} {s}" for s in splits)
        log.info("Reference log-probs precomputed for %s pairs in %.1f s", sizes, time.perf_counter() - started)

    def on_train_start(self) -> None:
        # Not on_fit_start: sharded strategies (FSDP, DeepSpeed) restore a checkpoint (and its cached reference
        # log-probs) after that hook.
        super().on_train_start()  # EWC's Fisher, when configured
        self.precompute_reference_logps()

    def on_validation_start(self) -> None:
        self.precompute_reference_logps()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["reference_logps"] = {"average": self.average, "splits": self.cached_reference_logps}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("reference_logps")
        if saved and saved["splits"]:
            if saved["average"] != self.average:
                kinds = {True: "length-averaged", False: "summed"}
                raise ValueError(
                    f"The checkpoint's precomputed reference log-probs are {kinds[saved['average']]}, but "
                    f"module.loss_type={self.loss_type} needs {kinds[self.average]} ones ({', '.join(LENGTH_AVERAGED)} "
                    "use length-averaged log-probs, the other loss types summed ones). Resume with the "
                    "module.loss_type the run started with, or start a new run (without ckpt_path)."
                )
            self.cached_reference_logps = dict(saved["splits"])

    # --- loss --------------------------------------------------------------------------------------------------
    def pair_losses(self, batch: dict[str, torch.Tensor], split: str) -> StepOutput:
        chosen, rejected = self.logps(batch).chunk(2)
        if self.loss_type == "simpo":
            losses, chosen_rewards, rejected_rewards = simpo_loss(
                chosen, rejected, beta=self.beta, gamma=self.simpo_gamma, label_smoothing=self.label_smoothing
            )
        elif self.loss_type == "orpo":
            losses, chosen_rewards, rejected_rewards = orpo_loss(chosen, rejected, beta=self.beta)
        else:
            ref_chosen, ref_rejected = self.reference_logps(batch, split).chunk(2)
            losses, chosen_rewards, rejected_rewards = dpo_loss(
                chosen,
                rejected,
                ref_chosen,
                ref_rejected,
                beta=self.beta,
                loss_type=self.loss_type,
                label_smoothing=self.label_smoothing,
            )
        if self.sft_weight:
            losses = losses + self.sft_weight * self.chosen_nll(chosen, batch)
        return {
            "per_example_loss": losses,
            **reward_metrics(chosen_rewards, rejected_rewards),
            **dict(zip(LOGP_METRICS, (chosen.detach(), rejected.detach()))),
        }

    def chosen_nll(self, chosen_logps: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token-mean negative log-likelihood of each chosen answer [B]."""
        if self.average:
            return -chosen_logps
        targets = (shift_labels(batch["labels"]) != IGNORE_INDEX).float()
        tokens = per_sequence_sum(targets, **self.target_sequences(batch))[: len(chosen_logps)]
        return -chosen_logps / tokens.clamp(min=1)

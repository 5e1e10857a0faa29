"""Reward model: a scalar score head over the LM, trained on preference pairs with the Bradley-Terry loss."""

from __future__ import annotations

import dataclasses

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from lit_ft.data.batch import sequence_ends
from lit_ft.losses import reward_loss
from lit_ft.models import LoRA
from lit_ft.models.freeze import head_parameters
from lit_ft.modules.fine_tune import StepOutput
from lit_ft.modules.pairwise import PairwiseModule, reward_metrics


class RewardModelModule(PairwiseModule):
    """Train ``r(x, y)``, a scalar read at the last non-padding token, so that ``r(x, y_c) > r(x, y_r)``.

    The factory is called as ``model(head="score")`` (``lit_ft.models.load_model`` then loads
    ``AutoModelForSequenceClassification`` with one label). Full fine-tuning, frozen backbone or LoRA: a LoRA
    adapter gets peft's sequence-classification task type, which trains the score head in full beside the
    adapters (``modules_to_save``); a frozen backbone keeps the head trainable. The export (``model/``) is a
    folder ``AutoModelForSequenceClassification.from_pretrained`` loads back as the reward model.

    Loss: :func:`lit_ft.losses.reward_loss`, averaged over the pairs of an optimizer step. Logged:
    ``rewards/chosen`` and ``rewards/rejected`` (mean rewards), ``rewards/accuracies``, ``rewards/margins``.

    Args:
        use_margin: subtract each row's ``margin`` (0 where a row has none) inside the sigmoid.
        center_rewards_coefficient: weight of ``(r_c + r_r)^2``, keeping rewards centred on zero.
        (others: see :class:`lit_ft.modules.FineTuneModule`; not the LM-head options of
            :class:`~lit_ft.modules.CausalLMModule`: a reward model has no LM head)
    """

    def __init__(self, *args, use_margin: bool = True, center_rewards_coefficient: float = 0.0, **kwargs) -> None:
        if kwargs.get("ewc") is not None:
            raise ValueError(
                "ewc estimates its Fisher information on the LM loss of general text, and a reward model has no LM "
                "head: leave out ewc= (module.l2sp or mixout= regularise a reward model)."
            )
        if isinstance(kwargs.get("adapter"), LoRA):
            kwargs["adapter"] = dataclasses.replace(kwargs["adapter"], task_type="SEQ_CLS")
        super().__init__(*args, **kwargs)
        self.use_margin, self.center_rewards_coefficient = use_margin, center_rewards_coefficient

    def pretrained_model(self) -> PreTrainedModel:
        return self.model_factory(head="score")

    def build_model(self) -> PreTrainedModel:
        model = super().build_model()
        base = model.get_base_model() if isinstance(model, PeftModel) else model
        head = head_parameters(base)
        if self.adapter is None:
            for parameter in head:  # a frozen backbone still trains its new head
                parameter.requires_grad_(True)
        if not any(p.requires_grad for p in head):
            raise ValueError(
                "The reward model's score head is not trainable: with a custom adapter, list the head in its "
                "modules_to_save (for Llama-like models: ['score'])."
            )
        return model

    def rewards(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar rewards [2B] (float32) of the chosen then the rejected sequences.

        Padded rows: the model's own pooling, the score at each row's last non-padding token. A one-row batch
        (padding-free or shared-prompt): the score head's per-token output [1, T, 1], taken from the model's own
        forward (so FSDP and DeepSpeed gather the weights as usual), at each sequence's last token
        (:func:`~lit_ft.data.batch.sequence_ends`, no host sync); the model's pooling of the row is ignored."""
        if batch.get("position_ids") is None:
            return self(batch).squeeze(-1).float()
        model = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        head = getattr(model, "score", None)
        if head is None:
            raise ValueError(
                f"{type(model).__name__} has no `score` head, which one-row reward batches read at each sequence's "
                "last token: set data.padding_free=false and data.shared_prompt=false."
            )
        scores: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda module, args, output: scores.append(output))
        try:
            self(batch)
        finally:
            hook.remove()
        return scores[-1][0, sequence_ends(batch)].squeeze(-1).float()

    def pair_losses(self, batch: dict[str, torch.Tensor], split: str) -> StepOutput:
        chosen, rejected = self.rewards(batch).chunk(2)
        margin = batch["margin"] if self.use_margin else None
        losses = reward_loss(chosen, rejected, margin, self.center_rewards_coefficient)
        return {"per_example_loss": losses, **reward_metrics(chosen, rejected)}

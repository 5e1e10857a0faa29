"""Adapters through peft: LoRA and its variants (rsLoRA, DoRA), composed by config onto any module's model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from lit_ft.models.lora_addmm import use_addmm_lora


@dataclass
class LoRA:
    """Low-rank adapters on the chosen linear layers (Hu et al., 2021): ``W x + (alpha / r) * B A x``.

    Args:
        r: adapter rank.
        alpha: scaling numerator; the update is scaled by ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        dropout: dropout on the adapter's input.
        target_modules: ``"all-linear"`` (every linear layer but the output head, as QLoRA recommends) or a
            list of module names such as ``["q_proj", "v_proj"]``.
        use_rslora: rank-stabilised scaling ``alpha / sqrt(r)`` (Kalajdzievski, 2023), steadier across ranks.
        use_dora: weight-decomposed LoRA (Liu et al., 2024): magnitude and direction trained apart.
        modules_to_save: modules trained in full beside the adapters (e.g. ``["lm_head"]``, a score head).
        init_from: a saved peft adapter folder to continue training from.
        addmm: add the scaled update inside the second adapter matmul where that is exact
            (:mod:`lit_ft.models.lora_addmm`; faster, same values); false runs peft's forward as it is.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: list[str] | None = None
    init_from: str | None = None
    addmm: bool = True
    task_type: str = field(default="CAUSAL_LM")

    def peft_config(self) -> LoraConfig:
        target = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=target,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            modules_to_save=list(self.modules_to_save) if self.modules_to_save else None,
            task_type=self.task_type,
        )

    def __call__(self, model: PreTrainedModel) -> PeftModel:
        checkpointing = (
            "is_activation_checkpointing"
            if hasattr(model, "is_activation_checkpointing")
            else "is_gradient_checkpointing"
        )
        if getattr(model, checkpointing, False):
            model.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input
        if self.init_from:
            if not (Path(self.init_from) / "adapter_config.json").is_file():
                raise FileNotFoundError(f"init_from={self.init_from} is not a peft adapter folder")
            adapted = PeftModel.from_pretrained(model, self.init_from, is_trainable=True)
        else:
            adapted = get_peft_model(model, self.peft_config())
        if self.addmm:
            use_addmm_lora(adapted)
        return adapted

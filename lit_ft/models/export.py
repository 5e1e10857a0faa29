"""The end of a run: the trained model gathered whole (when a strategy sharded it) and saved in Hugging Face format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.models.saving import save_pretrained
from lit_ft.utils.distributed import full_state_dict, is_sharded


def consolidated_model(
    trainer: L.Trainer | None,
    model: PreTrainedModel,
    build_model: Callable[[], PreTrainedModel],
    prefix: str = "model.",
) -> PreTrainedModel | None:
    """The trained ``model``, whole, on global rank 0 (``None`` on other ranks).

    When the strategy has sharded it (FSDP2, FSDP1, DeepSpeed ZeRO-3: ``trainer.model`` holds the shards), the full
    weights are gathered to rank 0's CPU (a collective: all ranks must call this) and loaded into a freshly built,
    unsharded copy from ``build_model``. ``prefix`` is the model's attribute path in the gathered state dict (keys
    are relative to the LightningModule). Without a trainer, ``model`` as it is.
    """
    if trainer is None or not is_sharded(trainer.model):
        return model if trainer is None or trainer.is_global_zero else None
    state = full_state_dict(trainer.model)
    if not trainer.is_global_zero:
        return None
    whole = build_model()
    whole.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return whole


def export_model(
    output_dir: Path,
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    has_adapter: bool,
    base_model: str | None,
) -> dict[str, str | None]:
    """Save ``model`` (from :func:`consolidated_model`; ``None`` on ranks that do not write) with its tokenizer;
    return the folders written and ``base_model`` (what the adapter applies to and the model was fine-tuned from).

    Adapter runs write ``adapter/`` (peft format, small; ``base_model_name_or_path`` is the base's name as users
    know it, see :func:`~lit_ft.models.loading.model_name`) and ``model/`` (the adapters merged into the base, in
    place: the peft model is unusable afterwards). Both are ready for inference (:func:`save_pretrained`), and each
    folder is written to a temporary name and renamed, so it is never seen half-written.
    """
    paths: dict[str, str | None] = {"model_path": str(output_dir / "model")}
    if has_adapter:
        paths["adapter_path"] = str(output_dir / "adapter")
    paths["base_model"] = base_model
    if model is None:
        return paths
    if has_adapter:
        # lit-ft never resizes the vocabulary; peft's "auto" would look the base's name up on the hub to check
        save_pretrained(output_dir / "adapter", model, tokenizer, save_embedding_layers=False)
        model = model.merge_and_unload()
    save_pretrained(output_dir / "model", model, tokenizer)
    return paths

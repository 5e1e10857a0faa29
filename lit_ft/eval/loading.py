"""Load what a run saved (a Hugging Face model folder, a peft adapter folder or a Lightning checkpoint) for evaluation.

Whatever the source, the model ends up inside the configured :class:`~lit_ft.modules.CausalLMModule`, so
evaluation computes losses with the module's own ``token_losses`` (the numbers training logs) and generates
with its ``model``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from peft import PeftConfig, PeftModel
from transformers import PreTrainedTokenizerBase

from lit_ft.data.chat_templates import with_chat_template
from lit_ft.models import load_model, load_tokenizer
from lit_ft.modules.causal_lm import CausalLMModule

log = logging.getLogger(__name__)

ModelKind = Literal["base", "model", "adapter", "checkpoint"]


@dataclass
class EvalModel:
    module: CausalLMModule
    tokenizer: PreTrainedTokenizerBase
    source: str
    kind: ModelKind


def model_kind(path: str | Path | None) -> ModelKind:
    """``base`` (no path: the configured model), ``adapter`` (has ``adapter_config.json``), ``model`` (has
    ``config.json``) or ``checkpoint`` (a ``.ckpt`` file)."""
    if path is None:
        return "base"
    path = Path(path)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return "adapter"
    if path.is_dir() and (path / "config.json").is_file():
        return "model"
    if path.is_file() and path.suffix == ".ckpt":
        return "checkpoint"
    if path.is_dir() and path.suffix == ".ckpt":
        raise ValueError(
            f"{path} is a sharded checkpoint folder (FSDP, DeepSpeed): evaluate the run's model/ or adapter/ folder, "
            "which the run writes unsharded at its end"
        )
    raise FileNotFoundError(
        f"model_path={path} is neither a Hugging Face model folder (config.json), a peft adapter folder "
        "(adapter_config.json) nor a Lightning checkpoint (.ckpt)"
    )


def run_config_of(checkpoint: Path) -> DictConfig | None:
    """The resolved ``config.yaml`` of the run a checkpoint belongs to (``<run>/checkpoints/x.ckpt``), if found."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return OmegaConf.load(folder / "config.yaml")
    return None


def _wrap(cfg: DictConfig, model: torch.nn.Module) -> CausalLMModule:
    """The configured module around an already built model (no adapter or freezing applied again, nothing trained:
    the module class's ``evaluation_arguments`` apply)."""
    evaluation = getattr(get_class(cfg.module._target_), "evaluation_arguments", {})
    module = instantiate(cfg.module, model=lambda: model, adapter=None, freeze=None, **evaluation)
    module.configure_model()
    return module


def load_eval_model(cfg: DictConfig, model_path: str | None = None) -> EvalModel:
    """Load ``model_path`` (see :func:`model_kind`) with its tokenizer, inside the module of ``cfg``, in eval mode.

    The tokenizer renders chats with ``data.chat_template`` when it is set (a checkpoint's: that of the run's
    ``config.yaml`` unless ``cfg`` sets one), else with its own (a run's ``model/`` and ``adapter/`` carry the
    template it was trained with).

    - no path: the model of ``cfg.model`` (the base model before fine-tuning);
    - model folder: ``load_model(path)`` with the dtype and attention of ``cfg.model``;
    - adapter folder: the base model of ``cfg.model`` with the adapter loaded and merged;
    - checkpoint: the module is rebuilt from the run's saved ``config.yaml`` when it sits beside the checkpoint
      (else from ``cfg.module``), then the checkpoint's weights are loaded into it (only the trainable ones for
      adapter and frozen-backbone runs, whose checkpoints hold only those).
    """
    kind = model_kind(model_path)
    chat_template = cfg.data.get("chat_template")
    options = {k: cfg.model[k] for k in ("dtype", "attn_implementation", "trust_remote_code") if k in cfg.model}
    trust = {"trust_remote_code": options.get("trust_remote_code", False)}
    if kind == "checkpoint":
        run_cfg = run_config_of(Path(model_path)) or cfg
        module: CausalLMModule = instantiate(run_cfg.module)
        module.configure_model()
        checkpoint = torch.load(model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(checkpoint["state_dict"], strict=module.strict_loading)
        tokenizer = load_tokenizer(run_cfg.data.tokenizer, **trust)
        chat_template = chat_template or run_cfg.data.get("chat_template")
    elif kind == "adapter":
        base = instantiate(cfg.model)()
        trained_on = PeftConfig.from_pretrained(model_path).base_model_name_or_path
        if trained_on and base.name_or_path and Path(trained_on).name != Path(base.name_or_path).name:
            log.warning(
                "The adapter was trained on %s, but is loaded onto %s (the `model` group)",
                trained_on,
                base.name_or_path,
            )
        model = PeftModel.from_pretrained(base, model_path).merge_and_unload()
        module, tokenizer = _wrap(cfg, model), load_tokenizer(model_path, **trust)
    elif kind == "model":
        module, tokenizer = _wrap(cfg, load_model(model_path, **options)), load_tokenizer(model_path, **trust)
    else:
        module, tokenizer = _wrap(cfg, instantiate(cfg.model)()), load_tokenizer(cfg.data.tokenizer, **trust)
    tokenizer = with_chat_template(tokenizer, chat_template)
    source = str(model_path) if model_path else str(cfg.model.get("name_or_path", cfg.model._target_))
    log.info("Evaluating %s (%s)", source, kind)
    return EvalModel(module.eval().requires_grad_(False), tokenizer, source, kind)

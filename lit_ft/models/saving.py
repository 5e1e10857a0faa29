"""Save a trained model (or peft adapter) with its tokenizer as a folder that works for inference anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.utils.io import atomic_directory


def save_pretrained(
    folder: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **options: Any
) -> Path:
    """Write ``model`` and ``tokenizer`` to ``folder`` in Hugging Face format, atomically (a temporary folder
    renamed into place), with ``options`` passed to the model's ``save_pretrained``.

    The saved ``config.json`` and ``generation_config.json`` have ``use_cache: true``: lit-ft trains with the
    KV cache off (:func:`~lit_ft.models.load_model`), a training setting that would make everyone's generation
    recompute the whole prefix at each token. The model in memory keeps its settings.
    """
    configs = [c for c in (model.config, getattr(model, "generation_config", None)) if c is not None]
    before = [c.use_cache for c in configs]
    try:
        for config in configs:
            config.use_cache = True
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True, **options)
            tokenizer.save_pretrained(tmp)
    finally:
        for config, use_cache in zip(configs, before):
            config.use_cache = use_cache
    return Path(folder)

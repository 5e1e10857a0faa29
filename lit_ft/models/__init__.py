"""Loading pretrained causal LMs and tokenizers (hub id, local folder, or the embedded SmolLM2)."""

from lit_ft.models.loading import EMBEDDED_MODELS, load_model, load_tokenizer, resolve_model_path
from lit_ft.models.tiny import load_tiny_llama, tiny_llama

__all__ = ["EMBEDDED_MODELS", "load_model", "load_tokenizer", "load_tiny_llama", "resolve_model_path", "tiny_llama"]

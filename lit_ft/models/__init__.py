"""Loading pretrained causal LMs and tokenizers (hub id, local folder, or the embedded SmolLM2); adapters, freezing."""

from lit_ft.models.adapters import LoRA
from lit_ft.models.attention import SDPA_VARLEN
from lit_ft.models.freeze import Freeze
from lit_ft.models.layers import decoder_layer_class, decoder_layer_classes, decoder_layers
from lit_ft.models.loading import EMBEDDED_MODELS, load_model, load_tokenizer, model_name, resolve_model_path
from lit_ft.models.tiny import load_tiny_llama, tiny_llama

__all__ = [
    "EMBEDDED_MODELS",
    "SDPA_VARLEN",
    "Freeze",
    "LoRA",
    "decoder_layer_class",
    "decoder_layer_classes",
    "decoder_layers",
    "load_model",
    "load_tiny_llama",
    "load_tokenizer",
    "model_name",
    "resolve_model_path",
    "tiny_llama",
]

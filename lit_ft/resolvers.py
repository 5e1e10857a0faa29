"""OmegaConf resolvers the configs use; registered when this module is imported (by ``train.py``, ``eval.py``,
``generate.py`` and ``lit_ft.run``).

- ``${first_existing:a,b,...}``: the first argument that is an existing file or folder, else the last one. For
  example ``${first_existing:${paths.log_dir}/lora_legal/model,smollm2-135m-instruct}`` starts from an earlier
  run's exported model when there is one, and from the embedded model otherwise.
- ``${shipped_data_dir:checkout}``: the folder of the data sets lit-ft ships (``paths.data_dir``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from omegaconf import OmegaConf


def first_existing(*candidates: str) -> str:
    """The first candidate that exists as a path, else the last candidate (a model alias or hub id, say)."""
    if not candidates:
        raise ValueError("first_existing needs at least one candidate")
    return next((str(c) for c in candidates if Path(str(c)).exists()), str(candidates[-1]))


def shipped_data_dir(checkout: str | None = None) -> str:
    """``<checkout>/data`` when an entry point of a checkout set ``LIT_FT_ROOT`` (train.py, eval.py and generate.py
    do), else the copy installed with lit-ft (package ``lit_ft.shipped_data``): the experiments and callbacks that
    read the shipped data then work from any folder of a project that pip-installs lit-ft."""
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

"""OmegaConf resolvers the configs use; registered when this module is imported (by ``train.py``, ``eval.py``,
``generate.py`` and ``lit_ft.run``).

- ``${first_existing:a,b,...}``: the first argument that is an existing file or folder, else the last one. For
  example ``${first_existing:${paths.log_dir}/lora_legal/model,smollm2-135m-instruct}`` starts from an earlier
  run's exported model when there is one, and from the embedded model otherwise.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def first_existing(*candidates: str) -> str:
    """The first candidate that exists as a path, else the last candidate (a model alias or hub id, say)."""
    if not candidates:
        raise ValueError("first_existing needs at least one candidate")
    return next((str(c) for c in candidates if Path(str(c)).exists()), str(candidates[-1]))


OmegaConf.register_new_resolver("first_existing", first_existing, replace=True)

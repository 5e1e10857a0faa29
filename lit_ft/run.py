"""The training pipeline behind ``train.py`` for a single fit: claim the run folder, then validate, fit, validate,
export and summarise (:func:`lit_ft.fit.train_stage`).

A config with a ``stages:`` list is a curriculum, run by :func:`lit_ft.stages.train_stages`; ``train.py`` picks
one or the other. Both call :mod:`lit_ft.fit` for each fit and neither imports the other: a single fit is not a
one-stage curriculum (no ``stages/`` folders, a checkpoint to resume from), and a curriculum is not a kind of fit.
Kept in the package (not in ``train.py``) so tests, sweeps and other entry points call it directly.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (registers the config resolvers)
from lit_ft.fit import train_stage
from lit_ft.utils.run_folder import claim_run_folder


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured module on the configured data and return the run summary.

    An earlier run in the same folder is never written over unless the config says so (:func:`claim_run_folder`).
    """
    if cfg.get("stages"):
        raise ValueError(
            "this config has a `stages:` list (a curriculum): run it with lit_ft.stages.train_stages(cfg), "
            "as `python train.py` does"
        )
    claim_run_folder(cfg.paths.output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite", False)))
    return train_stage(cfg)[0]

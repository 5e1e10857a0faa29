"""The training pipeline behind ``train.py``: claim the run folder, then one fit (validate, fit, validate, export,
summarise: :func:`lit_ft.fit.train_stage`) or, for a config with a ``stages:`` list, a curriculum of fits
(:func:`lit_ft.stages.train_stages`).

The import goes one way: this module picks, ``stages`` runs fits through :mod:`lit_ft.fit` and never imports this
one. Kept in the package (not in ``train.py``) so tests, sweeps and a project's own entry point call it directly.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

import lit_ft.resolvers  # noqa: F401  (registers the config resolvers)
from lit_ft.fit import train_stage
from lit_ft.stages import train_stages
from lit_ft.utils.run_folder import claim_run_folder


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured module on the configured data (each stage in turn, for a curriculum) and return the run
    summary.

    An earlier run in the same folder is never written over unless the config says so (:func:`claim_run_folder`).
    """
    claim_run_folder(cfg.paths.output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite", False)))
    return train_stages(cfg) if cfg.get("stages") else train_stage(cfg)[0]

"""Compose the project's Hydra config the way train.py does, for tests."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def compose_config(overrides: list[str], output_dir: Path | None = None, name: str = "train") -> DictConfig:
    """The composed config, with ``paths.output_dir`` pointed at ``output_dir`` (no Hydra run needed)."""
    os.environ.setdefault("LIT_FT_ROOT", str(REPO))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose(config_name=name, overrides=[*overrides, *extra])


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

"""Validate a composed config before anything is built: unknown keys, wrong types, incompatible options."""

from __future__ import annotations

from omegaconf import DictConfig

from lit_ft.config.checks import PACKING_SAFE_ATTENTION, check_compatibility
from lit_ft.config.schema import check_targets, target_options


class ConfigError(ValueError):
    """A configuration that cannot run, with every key at fault and what to change."""


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg``; return quietly when there is none."""
    errors = check_targets(cfg) + check_compatibility(cfg)
    if errors:
        raise ConfigError("Invalid configuration:\n  - " + "\n  - ".join(errors))


__all__ = [
    "PACKING_SAFE_ATTENTION",
    "ConfigError",
    "check_compatibility",
    "target_options",
    "validate_config",
]

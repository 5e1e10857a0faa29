"""Experiment loggers with lit-ft's defaults (W&B dashboards)."""

from lit_ft.loggers.wandb import WandbLogger, wandb_api_key_configured

__all__ = ["WandbLogger", "wandb_api_key_configured"]

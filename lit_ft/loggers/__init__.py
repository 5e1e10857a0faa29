"""Experiment loggers with lit-ft's defaults (W&B dashboards, a CSV log that survives a resume)."""

from lit_ft.loggers.csv import CSVLogger
from lit_ft.loggers.wandb import WandbLogger, wandb_api_key_configured

__all__ = ["CSVLogger", "WandbLogger", "wandb_api_key_configured"]

"""lit-ft: Lightning modules, callbacks and Hydra configs for fine-tuning causal language models."""

__version__ = "0.1.0"

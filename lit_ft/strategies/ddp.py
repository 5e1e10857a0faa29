"""Distributed data parallel: every rank holds the whole model; gradients are averaged by all-reduce."""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy

from lit_ft.strategies.launch import HydraSafeLaunch


class DDPStrategy(HydraSafeLaunch, LightningDDPStrategy):
    """Lightning's ``DDPStrategy`` (all its arguments), started safely from Hydra sweeps (``train.py -m``).

    For models that fit on one device. Gradients are averaged over ranks, which the module's token-mean
    normalisation expects (see ``CausalLMModule.on_before_optimizer_step``).
    """

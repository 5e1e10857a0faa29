"""Distributed data parallel: every rank holds the whole model; gradients are averaged by all-reduce."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy

from lit_ft.strategies.launch import HydraSafeLaunch


class DDPStrategy(HydraSafeLaunch, LightningDDPStrategy):
    """Lightning's ``DDPStrategy``, started safely from Hydra sweeps (``train.py -m``).

    For models that fit on one device. Gradients are averaged over ranks, which the module's token-mean
    normalisation expects (see ``FineTuneModule.normalize_gradients``).

    Args:
        find_unused_parameters: let DDP handle trainable parameters that a step does not use (slower).
        static_graph: the set of used parameters never changes (lets DDP skip per-step bookkeeping).
        gradient_as_bucket_view: gradients are views into DDP's communication buckets (less memory).
        kwargs: passed to Lightning's ``DDPStrategy`` (``process_group_backend``, ``timeout``, ...).
    """

    def __init__(
        self,
        find_unused_parameters: bool = False,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            find_unused_parameters=find_unused_parameters,
            static_graph=static_graph,
            gradient_as_bucket_view=gradient_as_bucket_view,
            **kwargs,
        )

"""Distributed strategies and checkpoint I/O plugins."""

from lit_ft.strategies.checkpoint_io import AtomicCheckpointIO

__all__ = ["AtomicCheckpointIO"]

"""Capture and restore the global random number generators, as plain types a ``weights_only`` load accepts."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's, torch's CPU and (when present) every CUDA generator."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],  # a list of ints, not an ndarray
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to states from :func:`capture_rng_states` (CUDA ones only when the device count matches)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableRNG:
    """Carry the generators through a checkpoint, so dropout (and any other draw) continues after a resume as if
    the run had not stopped.

    The states are set back at the first training step after loading (:meth:`restore_if_pending`), not when the
    checkpoint is loaded: everything that happens in between (building the loaders, the first prefetch) draws
    from the generators too, and the interrupted run made those draws before it saved.
    """

    KEY = "rng_states"  # where the states live in a checkpoint

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Put the current states in ``checkpoint``."""
        checkpoint[self.KEY] = capture_rng_states()

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Keep ``checkpoint``'s states (if it has any) for :meth:`restore_if_pending`."""
        self._pending = checkpoint.get(self.KEY)

    def restore_if_pending(self) -> None:
        """Set the generators to the loaded states, once."""
        if self._pending is not None:
            restore_rng_states(self._pending)
            self._pending = None

"""Matplotlib for files only: the ``Agg`` backend, so plots are written on machines without a display."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the ``Agg`` backend (imported on first use: plotting is rare and matplotlib slow
    to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

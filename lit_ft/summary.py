"""What a run leaves for a person: a terminal table, ``summary.json`` and a loss-curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lit_ft.callbacks.history import MetricHistory
from lit_ft.utils.io import write_json_atomic


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_format(v)}" for k, v in value.items())
    return str(value)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the scalar and flat-dict entries of ``summary`` as a two-column table (nested ones are in the JSON)."""
    table = Table(title="lit-ft run summary", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        nested = isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values())
        if value is None or isinstance(value, (list, tuple)) or nested:
            continue
        table.add_row(key, _format(value))
    (console or Console()).print(table)


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    write_json_atomic(path, summary)


def plot_loss_curves(history: MetricHistory, path: str | Path, title: str = "") -> Path | None:
    """Plot training loss per optimizer step and validation loss per check; ``None`` when nothing was logged."""
    if not history.train and not history.val.get("val/loss"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if history.train:
        steps, values = zip(*history.train)
        axis.plot(steps, values, label="train/loss", alpha=0.8)
    if history.val.get("val/loss"):
        steps, values = zip(*history.val["val/loss"])
        axis.plot(steps, values, "o-", label="val/loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (nats/token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)

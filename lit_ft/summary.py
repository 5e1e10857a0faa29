"""What a run leaves for a person: a terminal table, ``summary.json`` and a loss-curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lit_ft.callbacks.history import MetricHistory
from lit_ft.utils.io import write_json_atomic
from lit_ft.utils.plotting import pyplot


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3e}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)


# Validation metrics that are counts of what was scored, not results: left out of the before/after table.
COUNT_PREFIXES = ("val/tokens/", "val/examples/")
# Forgetting scores shown beside the validation metrics (summary["forgetting"]: baseline and final).
FORGETTING_SCORES = ("mcq_acc", "prose_ppl")


def _val_order(name: str) -> tuple[int, str]:
    """val/loss, val/ppl, the per-task losses, then any other metric (reward accuracy, margins, ...)."""
    rank = {"val/loss": 0, "val/ppl": 1}.get(name, 2 if name.startswith("val/loss/") else 3)
    return rank, name


def results(summary: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """``(metric, before, after)`` for every validation metric (overall, per task type, any other) and the
    forgetting scores (baseline and final): what the terminal table and the model card show."""
    before, after = summary.get("val_before") or {}, summary.get("val_after") or {}
    names = sorted((n for n in {**before, **after} if not n.startswith(COUNT_PREFIXES)), key=_val_order)
    rows = [(name, before.get(name), after.get(name)) for name in names]
    forgetting = summary.get("forgetting") or {}
    for score in FORGETTING_SCORES:
        if score in (forgetting.get("final") or {}):
            rows.append(
                (f"forgetting/{score}", (forgetting.get("baseline") or {}).get(score), forgetting["final"][score])
            )
    return rows


def formatted_results(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """:func:`results` as text: ``(metric, before, after, change)``, ``-`` where a value is missing."""
    rows = []
    for name, first, last in results(summary):
        change = f"{last - first:+.4f}" if first is not None and last is not None else ""
        shown = [format_value(value) if value is not None else "-" for value in (first, last)]
        rows.append((name, *shown, change))
    return rows


def results_table(summary: dict[str, Any]) -> Table | None:
    """Every validation metric before and after training, and the forgetting scores (baseline and final)."""
    rows = formatted_results(summary)
    if not rows:
        return None
    table = Table(title="before -> after training")
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _run_rows(summary: dict[str, Any]) -> tuple[list[tuple[str, str]], set[str]]:
    """The run's facts worded for a person, and the summary keys they cover."""
    rows, used = [], set()

    def take(*keys: str) -> list[Any]:
        used.update(keys)
        return [summary.get(key) for key in keys]

    experiment, output_dir, resumed = take("experiment", "output_dir", "resumed_from")
    rows += [("experiment", str(experiment)), ("output_dir", str(output_dir))]
    if resumed:
        rows.append(("resumed from", str(resumed)))
    steps, epochs = take("optimizer_steps", "epochs")
    if steps is not None:
        rows.append(("optimizer steps", f"{steps:,}" + (f" ({epochs} epoch{'s' * (epochs != 1)})" if epochs else "")))
    tokens, pairs = take("train_tokens", "train_pairs")  # what the loss averages over (pairs: preference modules)
    train_data = (summary.get("data") or {}).get("train", {})
    if tokens is not None:
        per_epoch = [train_data.get(key) for key in ("tokens", "examples")]
        blocks, documents = train_data.get("blocks"), train_data.get("documents_split")
        cut = f", {blocks:,} of them blocks cut from {documents:,} long documents" if blocks else ""
        data = f" (data: {per_epoch[0]:,} tokens in {per_epoch[1]:,} examples{cut})" if None not in per_epoch else ""
        rows.append(("trained on", f"{tokens:,} loss tokens{data}"))
    elif pairs is not None:
        rows.append(("trained on", f"{pairs:,} preference pairs"))
    trainable, total = take("trainable_params", "total_params")
    if trainable is not None and total:
        rows.append(("trainable parameters", f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"))
    best, skipped = take("best_val_loss", "skipped_steps")
    if best is not None:
        rows.append(("best val/loss", format_value(best)))
    stopping = take("early_stopping")[0]
    if stopping:
        text = f"best {stopping.get('monitor')} {format_value(stopping.get('best_score'))} at step {stopping.get('best_step')}"
        if stopping.get("stopped_early"):
            text += f"; stopped at step {stopping.get('stopped_step')}"
        rows.append(("early stopping", text + ("; its weights restored" if stopping.get("restored_best") else "")))
    if skipped:
        rows.append(("skipped steps", f"{skipped} (non-finite loss or gradient)"))
    perf = take("perf")[0] or {}
    if perf.get("tokens_per_s"):
        text = f"{perf['tokens_per_s']:.1f} tokens/s"
        if perf.get("mfu") is not None:  # and what the peak is: a GPU's datasheet figure or a measured matmul
            basis = f" of the {perf['mfu_basis']}" if perf.get("mfu_basis") else ""
            text += f", MFU {100 * perf['mfu']:.1f}%{basis}"
        text += f", peak memory {perf['peak_mem_gb']:.2f} GB" if perf.get("peak_mem_gb") is not None else ""
        rows.append(("throughput", text))
    scores = take("task_scores")[0]
    if scores and scores.get("checks"):
        checks = len(scores["checks"])
        rows.append(
            (
                "task scores",
                f"{scores['prompts']} held-out prompts, {checks} check{'s' * (checks != 1)}: "
                f"{scores['tokens']:,} tokens generated in {_duration(scores['seconds'])}",
            )
        )
    exceeded = (summary.get("forgetting") or {}).get("exceeded")
    if exceeded:
        rows.append(("forgetting", "; ".join(p for e in exceeded for p in e["problems"])))
    seconds = take("seconds")[0]
    if seconds is not None:
        rows.append(("time", _duration(seconds)))
    for key in ("model_path", "adapter_path", "loss_plot"):
        if take(key)[0]:
            rows.append((key, str(summary[key])))
    if output_dir:
        rows.append(("summary.json", str(Path(output_dir) / "summary.json")))
    return rows, used


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print what a run did: validation metrics before and after, then the run's facts; remaining scalar and
    flat-dict entries follow as they are (everything, nested entries included, is in ``summary.json``)."""
    console = console or Console()
    results = results_table(summary)
    if results is not None:
        console.print(results)
    rows, used = _run_rows(summary)
    shown_elsewhere = {"val_before", "val_after", "val_loss_before", "val_loss_after", "val_ppl_after"}
    table = Table(title="lit-ft run summary", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, value)
    for key, value in summary.items():
        nested = isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values())
        if key in used or key in shown_elsewhere or value is None or isinstance(value, (list, tuple)) or nested:
            continue
        table.add_row(key, format_value(value))
    console.print(table)


def summary_value(summary: dict[str, Any], name: str) -> Any:
    """A run's result by name: a key of ``summary.json`` (``val_loss_after``, ``best_val_loss``) or a validation
    metric after training (``val/accuracy/classify``, from ``val_after``): what ``train.py`` returns to a sweeper
    (``optimized_metric``)."""
    if name in summary:
        return summary[name]
    after = summary.get("val_after") or {}
    if name in after:
        return after[name]
    raise KeyError(
        f"optimized_metric={name}: neither a key of summary.json nor a validation metric after training "
        f"(val_after has {', '.join(sorted(after)) or 'none'})"
    )


def write_summary(path: str | Path, summary: dict[str, Any]) -> None:
    write_json_atomic(path, summary)


def plot_loss_curves(history: MetricHistory, path: str | Path, title: str = "") -> Path | None:
    """Plot training loss per optimizer step and validation loss per check; ``None`` when nothing was logged."""
    if not history.train and not history.val.get("val/loss"):
        return None
    plt = pyplot()

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

"""The contracts between the layers, declared: what the run and the callbacks read from a module, a datamodule, a
callback and a logger.

They are ``typing.Protocol``s (structural: a class takes part by having the members, with no base class), so a
module, datamodule, callback or logger of your own takes part by providing them. Where code must ask whether an
object takes part (a callback that may or may not report into ``summary.json``), it asks ``isinstance(x, Protocol)``
of the ``runtime_checkable`` ones, which checks that the members are there (not their types).

At the bottom of the stack (utils) so that every layer may import it; it imports no other part of lit-ft.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # for annotations only: nothing here imports transformers at run time
    from transformers import PreTrainedTokenizerBase


@runtime_checkable
class SummaryProvider(Protocol):
    """A callback that reports into ``summary.json``: the run merges the dict of every such callback into the
    summary, at the top level (``{"perf": {...}}``, ``{"early_stopping": {...}}``), on rank 0 after training."""

    def summary(self) -> dict[str, Any]: ...


@runtime_checkable
class FinishingLogger(Protocol):
    """A logger that holds a run open (W&B) and ends it with the run's summary, once ``summary.json`` is written
    (each job of a ``-m`` sweep then gets a run of its own)."""

    def finish(self, summary: dict[str, Any]) -> None: ...


@runtime_checkable
class TableLogger(Protocol):
    """A logger that shows tables (W&B): ``columns`` names, ``data`` one list per row."""

    def log_table(self, key: str, columns: list[str] | None = None, data: list[list[Any]] | None = None) -> None: ...


class ToDict(Protocol):
    """A record that writes itself into ``summary.json``."""

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class TaskData(Protocol):
    """What the run and the callbacks read from a datamodule once it is set up (``FineTuneDataModule`` has it).

    Attributes:
        tokenizer: what the examples were encoded with; the export saves it beside the model, generation and the
            forgetting check encode with it.
        stats: per split (``"train"``, ``"val"``), what was read, kept, truncated and dropped (``summary.json``'s
            ``data``).
        task_names: task type per task id (the ids of the batches' ``task_ids``).
    """

    tokenizer: PreTrainedTokenizerBase
    stats: Mapping[str, ToDict]
    task_names: list[str]

    def val_records(self) -> list[Any]:
        """The validation split's rows (as read, before tokenising): where generation prompts come from."""
        ...


@runtime_checkable
class TrainedModule(Protocol):
    """What the run and the callbacks read from the module they train (``FineTuneModule`` has it).

    Attributes:
        loss_unit: what the optimised loss is a mean over (``"tokens"``; ``"pairs"`` for preference modules).
        train_loss_tokens: loss units trained on so far, all ranks (a dropped step's not counted).
        trainable_params: parameters that train, counted when the model is built (before any sharding).
        total_params: all parameters, counted then too.
        trainable_names: names of the parameters that train, fixed when the model is built: a callback that
            freezes some for a while (gradual unfreezing) does not change it, so a copy of the best weights
            (early stopping) holds them all.
        step_dropped: whether the optimizer step just taken was dropped (no update; set by whatever dropped it,
            such as a ``DivergenceGuard``): per-task training metrics leave its micro-batches out.
        restored_step: the optimizer step whose weights the module holds when something put back the weights of
            an earlier step (early stopping, when training ends), else ``None``: checks after training label their
            results with it.
    """

    loss_unit: str
    train_loss_tokens: int
    trainable_params: int
    total_params: int
    trainable_names: set[str]
    step_dropped: bool
    restored_step: int | None

    def export(self, output_dir: Path, tokenizer: PreTrainedTokenizerBase) -> dict[str, str | None]:
        """Save the trained model (and adapter) with ``tokenizer`` under ``output_dir``; return the folders
        written (``model_path``, ``adapter_path``) and the base model's name, for the summary."""
        ...


@runtime_checkable
class HeadPositions(Protocol):
    """A module that runs its LM head on some positions of a training batch only: the ``Throughput`` callback
    counts the head's FLOPs there (on every token for a module without this)."""

    def head_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """How many positions of ``batch`` the head runs on (a 0-dim tensor); ``None`` when it runs on all."""
        ...


@runtime_checkable
class TrainedBatch(Protocol):
    """A module whose training step runs the model on another batch than the loader's (online RL: the rollouts it
    samples from the loader's prompts): the ``Throughput`` callback counts that batch's tokens."""

    def trained_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The padded batch the last training step ran forward and backward on, for the loader's ``batch``."""
        ...

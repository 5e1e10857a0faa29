"""Lightning's private API in one place: every ``_``-name of Lightning that lit-ft uses, behind a public name here.

Lightning promises nothing about names that start with ``_``: any release may rename them or change what they do.
lit-ft needs a few: to start the ranks of a Hydra sweep job, to restore early stopping's best weights, to make
DeepSpeed's config from the run, to keep the CSV log on resume, to restart the training data mid-epoch, and so on.
Nothing else in ``lit_ft/`` touches a private Lightning name (``tests/test_lightning_compat.py`` scans the package
for them). Attributes are read and written through the functions below; a private method lit-ft overrides
becomes a public hook of a small base class here (the lit-ft class subclasses it and overrides the hook).

Each entry says what Lightning behaviour it relies on and in which releases that holds (read in Lightning's
repository at the tags 2.0.0 to 2.6.0 and on its main branch of July 2026; installed and tested: 2.6.6).
``tests/test_lightning_compat.py`` checks every entry against the installed Lightning: the name exists, has the
expected signature or type, and, where that is cheap, still behaves as relied on. Those tests are what let the
``lightning<2.7`` pin (``pyproject.toml``) be lifted: install the new release, run them, and fix here what fails.

Layer: utils (imports lightning and torch only).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.load import _METADATA_FILENAME
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn

# --- launching the ranks of a node (lit_ft/strategies/launch.py) ------------------------------------------------


class ChildCommandLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher (it starts ranks 1..N-1 of a node as new processes with ``LOCAL_RANK`` set),
    whose children, under Hydra, run the command :meth:`hydra_child_command` gives.

    Relies on (2.0 to 2.6, main): ``_SubprocessScriptLauncher._call_children_scripts()`` starts the children and,
    when ``HydraConfig.initialized()``, builds each one's command by calling the module-level function
    ``subprocess_script._hydra_subprocess_cmd(local_rank) -> (command, cwd)``, looked up at call time, so putting
    another function in its place for the duration of the call changes the command.
    """

    def hydra_child_command(self, local_rank: int) -> tuple[Sequence[str], str]:
        """The command and working folder that start rank ``local_rank`` of this node under Hydra."""
        raise NotImplementedError

    def _call_children_scripts(self) -> None:
        lightning_command = subprocess_script._hydra_subprocess_cmd
        subprocess_script._hydra_subprocess_cmd = self.hydra_child_command
        try:
            super()._call_children_scripts()
        finally:
            subprocess_script._hydra_subprocess_cmd = lightning_command


def is_lightning_subprocess_launcher(launcher: object) -> bool:
    """Whether ``launcher`` is Lightning's own subprocess launcher (exactly: a subclass is one lit-ft chose).

    Relies on (2.0 to 2.6, main): the strategies that start their ranks by running the script again (DDP, FSDP,
    DeepSpeed, ModelParallel with several devices and no external launcher) configure a ``_SubprocessScriptLauncher``.
    """
    return type(launcher) is _SubprocessScriptLauncher


def launched_processes(launcher: object) -> list[subprocess.Popen]:
    """The child processes a subprocess launcher started from this process (none for any other launcher).

    Relies on (2.0 to 2.6, main): ``_SubprocessScriptLauncher.procs`` holds the ``Popen`` of each child it started
    (empty in the children and before launching).
    """
    return list(launcher.procs) if isinstance(launcher, _SubprocessScriptLauncher) else []


class LauncherChoice:
    """Strategy mixin (listed before the Lightning strategy): :meth:`choose_launcher` may replace the launcher that
    Lightning configures for the strategy.

    Relies on (2.0 to 2.6, main): the Trainer's accelerator connector calls ``strategy._configure_launcher()``
    once, which sets ``strategy._launcher``, the object the public ``strategy.launcher`` returns.
    """

    def choose_launcher(self, launcher: object) -> object:
        """The launcher to use instead of ``launcher`` (Lightning's choice, ``None`` when the ranks start
        themselves); ``launcher`` itself by default."""
        return launcher

    def _configure_launcher(self) -> None:
        super()._configure_launcher()  # type: ignore[misc]
        self._launcher = self.choose_launcher(self._launcher)


# --- early stopping (lit_ft/callbacks/early_stopping.py) ---------------------------------------------------------


class EarlyStoppingHooks(EarlyStopping):
    """Lightning's ``EarlyStopping`` with two public hooks on each check: :meth:`on_stop_decision` gets this rank's
    decision and its reason, :meth:`on_check_end` whether the check improved ``best_score``.

    Relies on (2.0 to 2.6, main): every check (from ``on_validation_end`` or ``on_train_epoch_end``) runs
    ``_run_early_stopping_check(trainer)``, which replaces the tensor ``best_score`` when the monitored value
    improves and decides through ``_evaluate_stopping_criteria(current) -> (should_stop, reason)``, called on each
    rank before the ranks' decisions are combined.
    """

    def on_stop_decision(self, should_stop: bool, reason: str | None) -> None:
        """This rank's decision at a check and Lightning's message for it (``None``: nothing to report)."""

    def on_check_end(self, trainer: L.Trainer, improved: bool) -> None:
        """After each check (also one skipped for a missing metric); ``improved``: ``best_score`` changed."""

    def _evaluate_stopping_criteria(self, current: torch.Tensor) -> tuple[bool, str | None]:
        should_stop, reason = super()._evaluate_stopping_criteria(current)
        self.on_stop_decision(should_stop, reason)
        return should_stop, reason

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        previous = self.best_score.clone()
        super()._run_early_stopping_check(trainer)
        self.on_check_end(trainer, not torch.equal(previous.to(self.best_score.device), self.best_score))


# --- DeepSpeed (lit_ft/strategies/deepspeed.py) -----------------------------------------------------------------


class DeepSpeedConfigHook(DeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy`` whose config is set by :meth:`fill_config` in place of Lightning's own
    formatting of it.

    Relies on (2.0 to 2.6, main): ``_format_config()`` is called once when the run sets up (trainer and module
    connected, before the engine starts; through ``_init_config_if_needed()`` since 2.2) and fills ``self.config``;
    ``_auto_select_batch_size()`` returns the batch size of the training dataloader (1 without one).
    """

    def fill_config(self) -> None:
        """Set ``self.config`` for the run."""
        raise NotImplementedError

    def auto_micro_batch_size(self) -> int:
        """The training dataloader's batch size, as Lightning reads it for DeepSpeed's micro batch."""
        return self._auto_select_batch_size()

    def _format_config(self) -> None:
        self.fill_config()


# --- FSDP1 (lit_ft/strategies/fsdp1.py) -------------------------------------------------------------------------


class FSDPSetupHook(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` calling :meth:`before_wrap` on the built model just before FSDP wraps it.

    Relies on (2.0 to 2.6, main): ``setup`` wraps the model through ``_setup_model(model)`` (after
    ``configure_model``), which reads ``self.kwargs["auto_wrap_policy"]`` and the activation-checkpointing policy
    (:func:`set_activation_checkpointing_policy`) at that moment.
    """

    def before_wrap(self, model: nn.Module) -> None:
        """Called with the model FSDP is about to wrap."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        self.before_wrap(model)
        return super()._setup_model(model)


def fsdp_state_dict_type(strategy: FSDPStrategy) -> str:
    """``"full"`` or ``"sharded"``: how the strategy writes checkpoints (its ``state_dict_type`` argument).

    Relies on (2.1 to 2.6, main): kept as ``FSDPStrategy._state_dict_type``, which checkpointing reads.
    """
    return strategy._state_dict_type


def set_activation_checkpointing_policy(strategy: FSDPStrategy, policy: Any) -> None:
    """Recompute in backward the activations of the modules that ``policy`` (a torch ``ModuleWrapPolicy``) wraps.

    Relies on (2.1 to 2.6, main): ``FSDPStrategy._activation_checkpointing_kwargs`` are the keyword arguments
    ``_setup_model`` passes to torch's ``apply_activation_checkpointing``; ``{"auto_wrap_policy": policy}`` is
    the form Lightning itself builds for a set of classes.
    """
    strategy._activation_checkpointing_kwargs = {"auto_wrap_policy": policy}


# --- FSDP2 through ModelParallelStrategy (lit_ft/strategies/fsdp2.py) -------------------------------------------

# File in a distributed checkpoint folder holding Lightning's other state (loops, callbacks, ...): "meta.pt".
# Relies on (2.1 to 2.6, main): ModelParallelStrategy.save_checkpoint writes it there with torch.save.
METADATA_FILENAME: str = _METADATA_FILENAME


def saves_distributed_checkpoint(strategy: ModelParallelStrategy) -> bool:
    """Whether the strategy writes sharded checkpoints (its ``save_distributed_checkpoint`` argument).

    Relies on (2.3 to 2.6, main): kept as ``ModelParallelStrategy._save_distributed_checkpoint``.
    """
    return strategy._save_distributed_checkpoint


def data_parallel_size(strategy: ModelParallelStrategy) -> int | str:
    """The ranks that shard the model, or ``"auto"`` until :func:`set_data_parallel_size` or Lightning sets it.

    Relies on (2.3 to 2.6, main): ``ModelParallelStrategy._data_parallel_size``, the constructor's argument, which
    ``setup_environment`` turns from ``"auto"`` into the number of nodes and uses to build the device mesh.
    """
    return strategy._data_parallel_size


def set_data_parallel_size(strategy: ModelParallelStrategy, size: int) -> None:
    """Shard over ``size`` ranks (set before ``setup_environment`` builds the device mesh); see
    :func:`data_parallel_size`."""
    strategy._data_parallel_size = size


# --- the training loop's data (lit_ft/data/datamodule.py) -------------------------------------------------------


def train_data_fetcher(trainer: L.Trainer) -> Iterable | None:
    """The fit loop's fetcher of training batches once the training loader is set up (``None`` before and after);
    ``iter()`` on it starts the loader afresh, so the next batch follows the sampler's state at that moment.

    Relies on (2.0 to 2.6, main): ``trainer.fit_loop._data_fetcher``, set by ``fit_loop.setup_data``; the
    fetcher's ``__iter__`` makes a new iterator of its combined loader.
    """
    return trainer.fit_loop._data_fetcher


# --- the LightningModule (lit_ft/modules/fine_tune.py) ----------------------------------------------------------


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer ``module`` is attached to, or ``None`` (where the public ``module.trainer`` raises).

    Relies on (2.0 to 2.6, main): ``LightningModule._trainer``, set by the ``trainer`` setter.
    """
    return module._trainer


# --- loggers (lit_ft/loggers/) ----------------------------------------------------------------------------------


def wandb_run(logger: WandbLogger) -> Any | None:
    """The logger's W&B run if it has started one (``None`` otherwise), without starting one as
    ``logger.experiment`` would.

    Relies on (2.0 to 2.6, main): ``WandbLogger._experiment`` holds the run that ``experiment`` made, and
    ``experiment`` returns it from then on.
    """
    return logger._experiment


def wandb_offline(logger: WandbLogger) -> bool:
    """Whether the logger runs W&B offline (its ``offline`` argument).

    Relies on (2.0 to 2.6, main): kept as ``WandbLogger._offline``.
    """
    return logger._offline


class CSVWriterHook(ExperimentWriter):
    """Lightning's CSV ``ExperimentWriter`` (``metrics.csv``, ``hparams.yaml``) whose check of an existing log
    folder, which deletes an earlier ``metrics.csv``, is replaced by :meth:`on_start`.

    Relies on (2.3 to 2.6, main): the writer's constructor calls ``_check_log_dir_exists()`` once, after setting
    ``metrics_file_path`` and before making the folder; ``_fs`` is the folder's fsspec filesystem; ``metrics_keys``
    are the columns it writes, new ones appended as metrics appear.
    """

    def on_start(self, fs: Any) -> None:
        """Called once when the writer is made, with the log folder's fsspec filesystem ``fs``."""

    def _check_log_dir_exists(self) -> None:
        self.on_start(self._fs)


def csv_writer(logger: CSVLogger, writer_class: type[ExperimentWriter]) -> ExperimentWriter:
    """The logger's writer, made once as ``writer_class(log_dir=logger.log_dir)`` after making ``logger.root_dir``:
    what Lightning's ``CSVLogger.experiment`` does, with another writer class.

    Relies on (2.0 to 2.6, main): ``CSVLogger._experiment`` caches the writer (``None`` until made) and ``_fs`` is
    the logger's filesystem.
    """
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = writer_class(log_dir=logger.log_dir)
    return logger._experiment

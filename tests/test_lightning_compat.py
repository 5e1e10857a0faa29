"""Lightning's private API as lit-ft uses it (lit_ft/utils/lightning_compat.py): each touch point still exists, has
the signature or type relied on and, where cheap, still behaves so; and nothing else in lit_ft/ reaches for one.

Run these first against a new Lightning release: they are what lifts the ``lightning<2.7`` pin.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.utils.data import DataLoader

from lit_ft.utils import lightning_compat
from lit_ft.utils.lightning_compat import (
    METADATA_FILENAME,
    ChildCommandLauncher,
    CSVWriterHook,
    DeepSpeedConfigHook,
    EarlyStoppingHooks,
    FSDPSetupHook,
    LauncherChoice,
    attached_trainer,
    csv_writer,
    data_parallel_size,
    fsdp_state_dict_type,
    is_lightning_subprocess_launcher,
    launched_processes,
    saves_distributed_checkpoint,
    set_activation_checkpointing_policy,
    set_data_parallel_size,
    train_data_fetcher,
    wandb_offline,
    wandb_run,
)
from tests.support.helpers import REPO, tiny_trainer

PACKAGE = REPO / "lit_ft"
COMPAT = PACKAGE / "utils" / "lightning_compat.py"
LIGHTNING_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric")

# Private attributes and methods of Lightning objects: every one lit-ft uses (the compat module's, checked below to
# be all listed here) and a few that Lightning recipes reach for. Outside the compat module, lit_ft/ may neither
# read, write nor override any of them.
KNOWN_PRIVATE = {
    "_hydra_subprocess_cmd",
    "_call_children_scripts",
    "_configure_launcher",
    "_launcher",
    "_run_early_stopping_check",
    "_evaluate_stopping_criteria",
    "_format_config",
    "_auto_select_batch_size",
    "_setup_model",
    "_state_dict_type",
    "_activation_checkpointing_kwargs",
    "_save_distributed_checkpoint",
    "_data_parallel_size",
    "_data_fetcher",
    "_trainer",
    "_experiment",
    "_offline",
    "_check_log_dir_exists",
    "_fs",
    # not used by lit-ft
    "_accelerator_connector",
    "_checkpoint_connector",
    "_logger_connector",
    "_data_connector",
    "_data_source",
    "_ddp_kwargs",
}


def private_lightning_uses(source: str) -> list[str]:
    """``line: what`` for each private Lightning name in ``source``: a ``_``-name imported from a Lightning package
    (or from a private module of one), and an access to or override of a name in :data:`KNOWN_PRIVATE`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIGHTNING_PACKAGES:
            parts = node.module.split(".")
            names = [alias.name for alias in node.names]
            found += [f"{node.lineno}: import {n} from {node.module}" for n in names if n.startswith("_")]
            if any(part.startswith("_") for part in parts):
                found.append(f"{node.lineno}: import from the private module {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIGHTNING_PACKAGES and any(part.startswith("_") for part in parts):
                    found.append(f"{node.lineno}: import of the private module {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in KNOWN_PRIVATE:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in KNOWN_PRIVATE:
            found.append(f"{node.lineno}: def {node.name}")
    return found


def params(function) -> list[str]:
    return list(inspect.signature(function).parameters)


# --- one home -----------------------------------------------------------------------------------------------------
def test_no_private_lightning_name_outside_the_compat_module():
    offenders = {
        str(path.relative_to(REPO)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != COMPAT and (uses := private_lightning_uses(path.read_text()))
    }
    assert not offenders, f"use lit_ft/utils/lightning_compat.py instead: {offenders}"


def test_the_scan_finds_each_kind_of_private_use():
    source = """
from lightning.fabric.utilities.load import _METADATA_FILENAME, save
from lightning.pytorch.utilities._pytree import tree_flatten
import lightning.pytorch.loops._utils
from lightning import Trainer

class Strategy(Base):
    def _format_config(self):
        self._window = trainer.fit_loop._data_fetcher
"""
    assert sorted(int(use.split(":")[0]) for use in private_lightning_uses(source)) == [2, 3, 4, 8, 9]


def test_every_private_name_the_compat_module_uses_is_scanned_for():
    tree = ast.parse(COMPAT.read_text())
    attributes = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")}
    overrides = {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef) and n.name.startswith("_") and not n.name.startswith("__")
    }
    imported = {
        alias.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module.split(".")[0] in LIGHTNING_PACKAGES
        for alias in n.names
    }
    assert {"_launcher", "_call_children_scripts"} <= attributes | overrides  # the AST walk sees them
    assert attributes | overrides <= KNOWN_PRIVATE
    assert {name for name in imported if name.startswith("_")} == {"_METADATA_FILENAME", "_SubprocessScriptLauncher"}


# --- launching ranks ----------------------------------------------------------------------------------------------
class Children(ChildCommandLauncher):
    def hydra_child_command(self, local_rank: int) -> tuple[list[str], str]:
        return [f"child-{local_rank}"], "/work"


def test_child_command_launcher_starts_its_command_where_lightning_starts_hydras(monkeypatch):
    assert params(subprocess_script._hydra_subprocess_cmd) == ["local_rank"]
    assert params(_SubprocessScriptLauncher._call_children_scripts) == ["self"]
    started = []

    def popen(command, env, cwd):
        started.append((command, env["LOCAL_RANK"], cwd))
        return SimpleNamespace(command=command)

    monkeypatch.setattr(subprocess_script.subprocess, "Popen", popen)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.setenv(key, "0")  # the launcher sets them; monkeypatch removes them afterwards
    lightning_command = subprocess_script._hydra_subprocess_cmd
    launcher = Children(LightningEnvironment(), num_processes=3, num_nodes=1)
    assert launched_processes(launcher) == []
    launcher._call_children_scripts()
    assert started == [(["child-1"], "1", "/work"), (["child-2"], "2", "/work")]
    assert subprocess_script._hydra_subprocess_cmd is lightning_command  # put back
    assert [p.command for p in launched_processes(launcher)] == [["child-1"], ["child-2"]]
    assert launched_processes(SimpleNamespace(procs=[object()])) == []  # not a subprocess launcher


def test_launcher_choice_replaces_the_launcher_lightning_configures():
    assert params(Strategy._configure_launcher) == ["self"]
    offered = []

    class Choosing(LauncherChoice, DDPStrategy):
        def choose_launcher(self, launcher):
            offered.append(launcher)
            return Children(launcher.cluster_environment, launcher.num_processes, launcher.num_nodes)

    trainer = tiny_trainer(strategy=Choosing(), devices=2)
    [lightning_launcher] = offered
    assert is_lightning_subprocess_launcher(lightning_launcher) and lightning_launcher.num_processes == 2
    assert isinstance(trainer.strategy.launcher, Children)
    assert not is_lightning_subprocess_launcher(trainer.strategy.launcher)  # a subclass is not Lightning's own


# --- early stopping -----------------------------------------------------------------------------------------------
def test_early_stopping_hooks_see_each_decision_and_whether_the_check_improved():
    assert params(EarlyStopping._run_early_stopping_check) == ["self", "trainer"]
    assert params(EarlyStopping._evaluate_stopping_criteria) == ["self", "current"]
    events = []

    class Recording(EarlyStoppingHooks):
        def on_stop_decision(self, should_stop, reason):
            events.append(("decision", should_stop, reason))

        def on_check_end(self, trainer, improved):
            events.append(("end", improved, trainer.should_stop))

    callback = Recording(monitor="val/loss", patience=1, mode="min")
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        sanity_checking=False,
        fast_dev_run=False,
        should_stop=False,
        current_epoch=0,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision),
    )
    for value in (2.0, 1.0, 1.5):
        trainer.callback_metrics = {"val/loss": torch.tensor(value)}
        callback.on_validation_end(trainer, None)  # Lightning's public hook runs the check
    decisions = [e[1:] for e in events if e[0] == "decision"]
    assert [(stop, reason.split(".")[0]) for stop, reason in decisions] == [
        (False, "Metric val/loss improved"),
        (False, "Metric val/loss improved by 1"),
        (True, "Monitored metric val/loss did not improve in the last 1 records"),
    ]
    assert [e[1:] for e in events if e[0] == "end"] == [(True, False), (True, False), (False, True)]
    assert callback.best_score.item() == 1.0


# --- DeepSpeed ----------------------------------------------------------------------------------------------------
def test_deepspeed_config_hook_fills_the_config_where_lightning_formats_it():
    assert params(DeepSpeedStrategy._format_config) == ["self"]
    assert params(DeepSpeedStrategy._auto_select_batch_size) == ["self"]
    assert "self._init_config_if_needed()" in inspect.getsource(DeepSpeedStrategy.setup)

    class Filling(DeepSpeedConfigHook):
        def fill_config(self):
            self.config = {"train_micro_batch_size_per_gpu": self.auto_micro_batch_size()}

    # the constructor needs the deepspeed package (a CUDA-only extra): what is tested needs none of its state
    strategy = object.__new__(Filling)
    loader = DataLoader(list(range(8)), batch_size=3)
    source = SimpleNamespace(is_defined=lambda: True, dataloader=lambda: loader)
    strategy._lightning_module = SimpleNamespace(trainer=SimpleNamespace(fit_loop=SimpleNamespace(_data_source=source)))
    strategy._config_initialized = False
    strategy._init_config_if_needed()
    assert strategy.config == {"train_micro_batch_size_per_gpu": 3}


# --- FSDP1 --------------------------------------------------------------------------------------------------------
def test_fsdp_setup_hook_runs_before_the_wrap_and_the_policies_are_lightnings_own(monkeypatch):
    assert params(FSDPStrategy._setup_model) == ["self", "model"]
    assert "self._setup_model(" in inspect.getsource(FSDPStrategy.setup)
    assert "self._activation_checkpointing_kwargs" in inspect.getsource(FSDPStrategy._setup_model)
    calls = []
    monkeypatch.setattr(FSDPStrategy, "_setup_model", lambda self, model: calls.append("wrap") or model)

    class Hooked(FSDPSetupHook):
        def before_wrap(self, model):
            calls.append("before_wrap")

    strategy = Hooked(state_dict_type="sharded")
    model = nn.Linear(2, 2)
    assert strategy._setup_model(model) is model and calls == ["before_wrap", "wrap"]
    assert fsdp_state_dict_type(strategy) == "sharded" and fsdp_state_dict_type(FSDPStrategy()) == "full"
    policy = ModuleWrapPolicy({nn.Linear})
    set_activation_checkpointing_policy(strategy, policy)
    lightnings = FSDPStrategy(activation_checkpointing_policy=policy)._activation_checkpointing_kwargs
    assert strategy._activation_checkpointing_kwargs == lightnings == {"auto_wrap_policy": policy}


# --- FSDP2 through ModelParallelStrategy --------------------------------------------------------------------------
def test_model_parallel_settings_and_checkpoint_metadata_file():
    strategy = ModelParallelStrategy(data_parallel_size="auto", tensor_parallel_size=1)
    assert data_parallel_size(strategy) == "auto" and saves_distributed_checkpoint(strategy)
    set_data_parallel_size(strategy, 2)
    assert data_parallel_size(strategy) == 2
    assert not saves_distributed_checkpoint(ModelParallelStrategy(save_distributed_checkpoint=False))
    assert "self._data_parallel_size" in inspect.getsource(ModelParallelStrategy.setup_environment)
    saving = inspect.getsource(ModelParallelStrategy.save_checkpoint)
    assert METADATA_FILENAME == "meta.pt" and "_METADATA_FILENAME" in saving
    assert "self._save_distributed_checkpoint" in saving


# --- the training loop's data -------------------------------------------------------------------------------------
class Recording(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen: list[int] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(int(batch[0]))
        return self.layer(batch.float().view(-1, 1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class RestartOnce(L.Callback):
    """Iterates the training fetcher again at the first batch, as the datamodule does when a resume restores late."""

    def __init__(self) -> None:
        self.fetcher = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.fetcher is None:
            self.fetcher = train_data_fetcher(trainer)
            iter(self.fetcher)


def test_iterating_the_train_data_fetcher_again_restarts_the_training_loader():
    module, restart = Recording(), RestartOnce()
    trainer = tiny_trainer(max_steps=3, callbacks=[restart])
    assert train_data_fetcher(trainer) is None  # before fit
    trainer.fit(module, DataLoader(torch.arange(6), batch_size=1))
    assert restart.fetcher is not None
    assert module.seen == [0, 0, 1]  # the batch after the restart is the loader's first again
    assert train_data_fetcher(trainer) is None  # after fit


def test_attached_trainer_is_none_where_the_public_property_raises():
    module = Recording()
    assert attached_trainer(module) is None
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        module.trainer  # noqa: B018
    trainer = tiny_trainer()
    module.trainer = trainer
    assert attached_trainer(module) is trainer


# --- loggers ------------------------------------------------------------------------------------------------------
def test_wandb_run_is_the_run_the_logger_made_and_offline_its_argument(tmp_path):
    logger = WandbLogger(offline=True, save_dir=str(tmp_path))
    assert wandb_offline(logger) is True and wandb_offline(WandbLogger(offline=False, save_dir=str(tmp_path))) is False
    assert wandb_run(logger) is None  # building the logger starts no run
    run = SimpleNamespace(name="run")
    logger._experiment = run  # where Lightning's `experiment` keeps the run it made
    assert logger.experiment is run and wandb_run(logger) is run


def test_csv_writer_hook_keeps_the_metrics_lightnings_writer_deletes(tmp_path):
    rows = "step,train/loss\n0,1.5\n"
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(rows)
    with pytest.warns(UserWarning, match="will be deleted"):
        ExperimentWriter(log_dir=str(tmp_path))
    assert not metrics.exists()  # Lightning's check, which the hook replaces

    class Appending(CSVWriterHook):
        def on_start(self, fs):
            self.found = fs.isfile(self.metrics_file_path)
            self.metrics_keys = ["step", "train/loss"]

    metrics.write_text(rows)
    writer = Appending(log_dir=str(tmp_path))
    assert writer.found and metrics.read_text() == rows
    writer.log_metrics({"train/loss": 1.25}, step=1)
    writer.save()
    assert metrics.read_text() == rows + "1,1.25\n"  # appended under the kept columns

    logger = CSVLogger(save_dir=str(tmp_path / "logs"), name="csv", version="")
    made = csv_writer(logger, Appending)
    assert isinstance(made, Appending) and Path(logger.root_dir).is_dir()
    assert csv_writer(logger, Appending) is made and logger.experiment is made  # Lightning's cache of the writer


def test_the_compat_module_imports_lightning_and_torch_only():
    packages = set()
    for node in ast.walk(ast.parse(COMPAT.read_text())):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            packages.add(node.module.split(".")[0])
    assert packages - {"__future__", "subprocess", "collections", "typing"} == {"lightning", "torch"}
    assert "lightning<2.7" in lightning_compat.__doc__

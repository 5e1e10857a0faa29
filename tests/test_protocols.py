"""The declared contracts of lit_ft.utils.protocols hold for lit-ft's own modules, datamodules, callbacks and
loggers, and plain Lightning objects do not pass for them (so the code that asks ``isinstance`` tells them apart)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

import lit_ft.callbacks
from lit_ft.data import SFTDataModule
from lit_ft.loggers import CSVLogger, WandbLogger
from lit_ft.modules import DPOModule, RewardModelModule, RLModule, SFTModule
from lit_ft.utils.protocols import (
    FinishingLogger,
    HeadPositions,
    SummaryProvider,
    TableLogger,
    TaskData,
    TrainedBatch,
    TrainedModule,
)


def never_built():
    raise AssertionError("the model is not built by these checks")


def test_lit_ft_modules_are_trained_modules_and_plain_ones_are_not():
    modules = [SFTModule(model=never_built), DPOModule(model=never_built, reference="copy")]
    modules.append(RewardModelModule(model=never_built))
    assert all(isinstance(module, TrainedModule) for module in modules)
    assert [module.loss_unit for module in modules] == ["tokens", "pairs", "pairs"]
    assert all(module.restored_step is None and module.step_dropped is False for module in modules)
    assert not isinstance(L.LightningModule(), TrainedModule)


def test_only_modules_with_an_lm_head_say_where_it_runs():
    assert issubclass(SFTModule, HeadPositions) and issubclass(DPOModule, HeadPositions)
    assert not issubclass(RewardModelModule, HeadPositions)  # a score head: Throughput counts no skipped head


def test_only_online_rl_trains_on_batches_of_its_own_making():
    assert issubclass(RLModule, TrainedBatch)  # its rollouts: what Throughput counts
    assert not any(issubclass(cls, TrainedBatch) for cls in (SFTModule, DPOModule, RewardModelModule))


def test_a_set_up_datamodule_is_task_data(tokenizer, arithmetic_files):
    datamodule = SFTDataModule(tokenizer, *arithmetic_files)
    datamodule.setup("fit")
    assert isinstance(datamodule, TaskData)
    assert datamodule.task_names == ["add", "sum"]
    assert {name: stats.to_dict()["examples"] for name, stats in datamodule.stats.items()} == {"train": 40, "val": 8}
    assert len(datamodule.val_records()) == 8
    assert not isinstance(L.LightningDataModule(), TaskData)


def test_the_callbacks_that_report_into_the_summary():
    classes = {name: getattr(lit_ft.callbacks, name) for name in lit_ft.callbacks.__all__}
    reporting = {name for name, cls in classes.items() if issubclass(cls, SummaryProvider)}
    assert reporting == {
        "DivergenceGuard",
        "EarlyStoppingWithRestore",
        "ForgettingCheck",
        "GenerationSamples",
        "TaskMetrics",
        "TaskScores",
        "Throughput",
    }


def test_only_the_wandb_logger_ends_its_run_with_the_summary_and_shows_tables():
    assert issubclass(WandbLogger, FinishingLogger) and issubclass(WandbLogger, TableLogger)
    for logger in (CSVLogger, LightningCSVLogger):
        assert not issubclass(logger, FinishingLogger) and not issubclass(logger, TableLogger)

"""One fit of the configured module on the configured data: validate the config, build everything, validate,
fit, validate, export and summarise.

A run is one fit (:func:`lit_ft.run.train`) or a curriculum of them (:mod:`lit_ft.stages`), so both call
:func:`train_stage` from here; neither imports the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_ft.callbacks.history import MetricHistory
from lit_ft.config import validate_config
from lit_ft.model_card import write_model_cards
from lit_ft.strategies import end_processes
from lit_ft.summary import plot_loss_curves, print_summary, write_summary
from lit_ft.utils.metric_names import VAL_LOSS, VAL_PPL, VAL_PREFIX
from lit_ft.utils.protocols import FinishingLogger, SummaryProvider, TaskData, TrainedModule
from lit_ft.utils.resume import resume_checkpoint


def instantiate_group(config: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a ``name -> {_target_: ...}`` group (callbacks, loggers); skip nulls."""
    if not config:
        return []
    return [instantiate(entry) for entry in config.values() if entry is not None and "_target_" in entry]


def validation_metrics(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule
) -> dict[str, float]:
    """Run one validation pass and return its ``val/`` metrics as floats."""
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items() if k.startswith(VAL_PREFIX)}


def training_record(trainer: L.Trainer, module: TrainedModule, datamodule: TaskData) -> dict[str, Any]:
    """What a fit trained on: loss units (``train_tokens``, or ``train_pairs``), optimizer steps, epochs, parameter
    counts (taken before any sharding) and the data's per-split stats."""
    return {
        f"train_{module.loss_unit}": module.train_loss_tokens,
        "optimizer_steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "trainable_params": module.trainable_params,
        "total_params": module.total_params,
        "data": {name: stats.to_dict() for name, stats in datamodule.stats.items()},
    }


def train_stage(cfg: DictConfig, model: Callable[[], Any] | None = None) -> tuple[dict[str, Any], L.LightningModule]:
    """One fit: the summary and the trained module. ``model`` replaces the configured model factory (a curriculum
    hands each stage the model the previous one trained).

    What it reads (:mod:`lit_ft.utils.protocols`): ``cfg.module`` builds a ``TrainedModule`` and ``cfg.data`` a
    ``TaskData`` (lit-ft's own do); each callback that is a ``SummaryProvider`` reports into the summary, each
    logger that is a ``FinishingLogger`` ends its run with it.
    """
    started = time.perf_counter()
    validate_config(cfg)  # typos, wrong types and incompatible options fail here, naming the key
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    # Before anything is written or loaded: the constructor checks the module's own options (a model is built
    # later, in configure_model), so a bad one fails as early as the config checks.
    module: L.LightningModule = instantiate(cfg.module, **({"model": model} if model else {}))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resume_checkpoint(cfg.get("ckpt_path"), output_dir)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    history = MetricHistory()
    callbacks = [history, *instantiate_group(cfg.get("callbacks"))]
    loggers = instantiate_group(cfg.get("logger"))
    for logger in loggers:  # the full resolved config (W&B's config panel, the CSV log's hparams.yaml)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    summary: dict[str, Any] = {"experiment": cfg.get("task_name"), "output_dir": str(output_dir)}
    if cfg.get("validate_before", True) and ckpt_path is None:
        validation_metrics(trainer, module, datamodule)  # recorded by `history`, which checkpoints keep
    # weights_only: a checkpoint holds tensors and plain types only, so loading one runs no pickled code.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    summary["resumed_from"] = ckpt_path
    summary["val_loss_before"] = history.before_training(VAL_LOSS)
    after = validation_metrics(trainer, module, datamodule)
    summary["val_loss_after"] = after.get(VAL_LOSS)
    summary["val_ppl_after"] = after.get(VAL_PPL)
    # every val/ metric the module logs (reward accuracy, margins, ...), before and after training
    summary["val_before"] = {k: v for k in history.val if (v := history.before_training(k)) is not None}
    summary["val_after"] = after
    summary["history"] = history.curves()  # (step, value) per check: the sweep report reads it, whatever the logger
    # On every rank: a sharded model is gathered to rank 0, which writes it.
    exported = module.export(output_dir, datamodule.tokenizer) if cfg.get("export", True) else {}
    trained = [loss for step, loss in history.val.get(VAL_LOSS, []) if step > 0]  # checks after some training
    summary["best_val_loss"] = min(trained, default=summary["val_loss_after"])

    if trainer.is_global_zero:
        summary.update(training_record(trainer, module, datamodule))
        for callback in trainer.callbacks:
            if isinstance(callback, SummaryProvider):
                summary.update(callback.summary())
        summary.update(exported)
        plot = plot_loss_curves(history, output_dir / "loss_curves.png", title=str(cfg.get("task_name", "")))
        summary["loss_plot"] = str(plot) if plot else None
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_summary(output_dir / "summary.json", summary)
        write_model_cards(summary, cfg)  # model/ and adapter/ README.md: needs the metrics, so after the summary
        print_summary(summary)
        for logger in trainer.loggers:
            if isinstance(logger, FinishingLogger):
                logger.finish(summary)
    end_processes(trainer)  # lets the next job of a `-m` sweep start its own processes
    return summary, module

"""Multi-stage curricula: several fits in one run, the model each stage trains being the one the next starts from.

A config with a ``stages:`` list runs them in order (:func:`lit_ft.run.train` calls :func:`train_stages` for it;
each stage is one :func:`lit_ft.fit.train_stage`). Each stage is a partial config merged over the rest of the
run's config, so a stage can change anything: its data (files, a mixture), ``trainer.max_epochs``, the optimizer
and LR schedule (``module.scheduler``), the adapter. For example (``experiment=curriculum_legal``)::

    stages:
      - name: cpt                    # continual pre-training on legal prose
        data: {train_files: .../legal_cpt/train.jsonl, val_files: .../legal_cpt/val.jsonl, packing: true}
        trainer: {max_epochs: 1}
        module: {scheduler: {decay_shape: none}}
      - name: mixed_sft              # generic + domain SFT
        data: {train_files: null, mixture: [{files: .../legal/train.jsonl, weight: 0.8}, ...]}
        trainer: {max_epochs: 2}
      - name: legal_sft              # domain SFT
        ...

Each stage writes its own ``<output_dir>/stages/<n>-<name>/`` (summary.json, csv/, checkpoints/, loss plot),
gets a fresh optimizer and schedule, and only the last exports the model. Between stages adapters are merged into
the weights and everything is made trainable again, so each stage's ``peft``/``freeze`` settings apply afresh
(a LoRA curriculum trains a new adapter per stage on the merged result of the previous ones).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel

from lit_ft.fit import train_stage
from lit_ft.summary import write_summary

log = logging.getLogger(__name__)

STAGE_KEYS = (
    "stage",
    "output_dir",
    "val_loss_before",
    "val_loss_after",
    "best_val_loss",
    "optimizer_steps",
    "train_tokens",
    "seconds",
)


def stage_configs(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """``(name, config)`` per stage: the run's config without ``stages``, the stage's keys merged over it."""
    base = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "stages"])
    OmegaConf.set_struct(base, False)  # a stage may add keys (a data mixture)
    root = Path(cfg.paths.output_dir)
    count = len(cfg.stages)
    for number, stage in enumerate(cfg.stages, start=1):
        overrides = OmegaConf.to_container(stage, resolve=False)  # interpolations resolve in the merged config
        name = str(overrides.pop("name", f"stage{number}"))
        stage_cfg = OmegaConf.merge(base, overrides)
        stage_cfg.paths.output_dir = str(root / "stages" / f"{number}-{name}")
        stage_cfg.run_name = f"{cfg.run_name}-{number}-{name}"
        stage_cfg.export = bool(cfg.get("export", True)) and number == count
        yield name, stage_cfg


def hand_over(model: PreTrainedModel) -> PreTrainedModel:
    """The trained model as the next stage's starting point: adapters merged in, every weight trainable."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # Trained in this run and saved nowhere: no name loads it, so an adapter of a later stage records no base.
    model.name_or_path = model.config.name_or_path = ""
    return model.requires_grad_(True).train()


def train_stages(cfg: DictConfig) -> dict[str, Any]:
    """Run the stages in order; return the last stage's summary with a ``stages`` list and run totals.
    (:func:`lit_ft.run.train` claims the run folder first.)"""
    if cfg.get("ckpt_path"):
        raise ValueError(
            "resuming a multi-stage run is not supported; each stage keeps its checkpoints in "
            "<output_dir>/stages/<n>-<name>/checkpoints, so run the remaining stages as their own run "
            "(model=hf model.name_or_path=<the previous stage's model/>)"
        )
    started = time.perf_counter()
    if rank_zero_only.rank == 0:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, Path(cfg.paths.output_dir) / "config.yaml", resolve=True)
    model, summaries = None, []
    for number, (name, stage_cfg) in enumerate(stage_configs(cfg), start=1):
        log.info("Curriculum stage %d/%d: %s", number, len(cfg.stages), name)
        summary, module = train_stage(stage_cfg, model=model)
        summaries.append({"stage": name, **summary})
        model = partial(hand_over, module.model)  # the next stage's model factory
    summary = {
        **summaries[-1],
        "output_dir": str(Path(cfg.paths.output_dir)),
        "stages": [{key: s.get(key) for key in STAGE_KEYS} for s in summaries],
        "train_tokens": sum(s.get("train_tokens", 0) for s in summaries),
        "optimizer_steps": sum(s.get("optimizer_steps", 0) for s in summaries),
        "seconds": round(time.perf_counter() - started, 1),
    }
    del summary["stage"]
    if rank_zero_only.rank == 0:
        write_summary(Path(cfg.paths.output_dir) / "summary.json", summary)
        print_stages(summary["stages"])
    return summary


def print_stages(stages: list[dict[str, Any]]) -> None:
    columns = ("stage", "val_loss_before", "val_loss_after", "optimizer_steps", "seconds")
    table = Table(title="curriculum stages")
    for column in columns:
        table.add_column(column)
    for stage in stages:
        table.add_row(*(f"{stage[c]:.4f}" if "loss" in c and stage[c] is not None else str(stage[c]) for c in columns))
    Console().print(table)

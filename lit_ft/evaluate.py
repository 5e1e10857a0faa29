"""The pipelines behind ``eval.py``: evaluate a saved model, chat with it (``mode=chat``), or report on data.

Kept in the package (not in the scripts) so tests and other entry points call them directly; wiring beside
:mod:`lit_ft.run`, outside the scoring library :mod:`lit_ft.eval` that it puts together.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from lit_ft.config import validate_config
from lit_ft.data.datamodule import FineTuneDataModule
from lit_ft.data.prompts import prompts_from_records
from lit_ft.data.readers import load_passages
from lit_ft.eval.chat import chat
from lit_ft.eval.data_report import data_report, print_report
from lit_ft.eval.general import GeneralAbility, load_questions
from lit_ft.eval.loading import EvalModel, load_eval_model
from lit_ft.eval.loss import task_losses
from lit_ft.eval.task_scores import ScoredGenerations, generate_and_score
from lit_ft.utils.io import write_json_atomic

log = logging.getLogger(__name__)


def _output_dir(cfg: DictConfig) -> Path:
    """The output folder, with the resolved config as ``<mode>_config.yaml`` (never a training run's
    ``config.yaml``, which loading its checkpoints relies on)."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / f"{cfg.mode}_config.yaml", resolve=True)
    return output_dir


def build_datamodule(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> FineTuneDataModule:
    """The configured DataModule with the evaluated model's tokenizer, set up; ``eval_files`` (when set) replace
    its validation split (and, only so that it has one, its training split)."""
    # the tokenizer already renders with the evaluated template (load_eval_model)
    overrides: dict[str, Any] = {"tokenizer": tokenizer, "chat_template": None}
    if cfg.get("eval_files"):
        files = OmegaConf.to_container(cfg.eval_files) if OmegaConf.is_list(cfg.eval_files) else cfg.eval_files
        overrides.update(train_files=files, val_files=files, val_ratio=0.0, mixture=None)
    datamodule: FineTuneDataModule = instantiate(cfg.data, **overrides)
    datamodule.setup("validate")
    if not datamodule.val_examples:
        raise ValueError("Nothing to evaluate: the data has no validation split (set data.val_files or eval_files)")
    return datamodule


def forgetting_scores(loaded: EvalModel, cfg: DictConfig) -> dict[str, float]:
    """General-ability scores (multiple-choice accuracy, prose perplexity) with the forgetting check's scorer."""
    general = GeneralAbility(
        loaded.tokenizer,
        load_questions(cfg.mcq_file, cfg.get("max_questions")),
        load_passages(cfg.prose_file, cfg.get("max_passages")),
        max_batch_tokens=cfg.get("max_batch_tokens", 2048),
    )
    return general.score(loaded.module.model)


def scored_generations(cfg: DictConfig, loaded: EvalModel, datamodule: FineTuneDataModule) -> ScoredGenerations:
    """The model's answers to the prompts of the validation split (``generation``), scored by ``task_metrics``."""
    settings = cfg.generation
    metrics = {task: instantiate(metric) for task, metric in (cfg.get("task_metrics") or {}).items()}
    return generate_and_score(
        loaded.module.model,
        loaded.tokenizer,
        prompts_from_records(datamodule.val_records(), settings.get("max_examples")),
        metrics,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=cfg.get("seed") or 0,
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Loss per task type, generations with task metrics, and optionally general-ability scores; ``eval.json``."""
    started = time.perf_counter()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, verbose=False)
    output_dir = _output_dir(cfg)
    loaded = load_eval_model(cfg, cfg.get("model_path"))
    datamodule = build_datamodule(cfg, loaded.tokenizer)
    result: dict[str, Any] = {
        "model": {"source": loaded.source, "kind": loaded.kind},
        "data": {
            "files": [str(source) for source in datamodule.val_files or datamodule.train_files],
            "val": datamodule.stats["val"].to_dict(),
        },
        "overall": {},
        "per_task": {task: {} for task in datamodule.task_names},
    }
    if cfg.loss.enabled:
        losses = task_losses(loaded.module, datamodule.val_dataloader(), datamodule.task_names, cfg.loss.max_batches)
        result["overall"].update(losses.pop("all", {}))
        for task, values in losses.items():
            result["per_task"][task].update(values)
    if cfg.generation.enabled:
        scored = scored_generations(cfg, loaded, datamodule)
        for task, values in scored.per_task.items():
            result["per_task"].setdefault(task, {}).update(values)
        path = output_dir / "generations.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in scored.rows))
        settings = OmegaConf.to_container(cfg.generation, resolve=True)
        cost = {"seconds": round(scored.seconds, 1), "tokens": scored.tokens}
        result["generation"] = {**settings, "file": str(path), "generations": len(scored.rows), **cost}
    if cfg.forgetting.enabled:
        result["forgetting"] = forgetting_scores(loaded, cfg.forgetting)
    result["per_task"] = {task: values for task, values in result["per_task"].items() if values}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(output_dir / "eval.json", result)
    print_eval(result)
    return result


def print_eval(result: dict[str, Any], console: Console | None = None) -> None:
    """A table of metrics (rows) per task type and ``all`` (columns), then the general-ability scores."""
    columns = [*result["per_task"].items(), ("all", result["overall"])]
    metrics = list(dict.fromkeys(k for _, values in columns for k in values))
    table = Table(title=f"Evaluation of {result['model']['source']} ({result['model']['kind']})")
    table.add_column("metric")
    for task, _ in columns:
        table.add_column(task, justify="right")
    for metric in metrics:
        table.add_row(metric, *(_format(values.get(metric)) for _, values in columns))
    console = console or Console()
    console.print(table)
    if result.get("forgetting"):
        console.print("general ability: " + ", ".join(f"{k}={_format(v)}" for k, v in result["forgetting"].items()))


def _format(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)  # counts are ints


def chat_session(cfg: DictConfig) -> list[dict[str, Any]]:
    """Chat with the model of ``model_path`` in the terminal (or answer ``chat.prompt`` once); ``chat.jsonl``."""
    output_dir = _output_dir(cfg)
    loaded = load_eval_model(cfg, cfg.get("model_path"))
    settings = cfg.chat
    transcript = chat(
        loaded.module.model,
        loaded.tokenizer,
        prompt=settings.prompt,
        system=settings.system,
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )
    with (output_dir / "chat.jsonl").open("a") as handle:
        handle.writelines(json.dumps(turn) + "\n" for turn in transcript)
    return transcript


def report_data(cfg: DictConfig) -> dict[str, Any]:
    """The data report of the configured data (see :mod:`lit_ft.eval.data_report`); ``data_report.json``."""
    output_dir = _output_dir(cfg)
    report = data_report(instantiate(cfg.data), **cfg.data_report)
    write_json_atomic(output_dir / "data_report.json", report)
    print_report(report)
    return report


MODES = {"eval": evaluate, "chat": chat_session, "data_report": report_data}


def run(cfg: DictConfig) -> Any:
    """Validate the config as training does (typos, types, incompatible options), then run its ``mode``."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode} (expected one of {', '.join(MODES)})")
    validate_config(cfg)
    return MODES[cfg.mode](cfg)

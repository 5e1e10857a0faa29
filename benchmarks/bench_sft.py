"""Side-by-side fine-tuning benchmark: lit-ft against TRL's ``SFTTrainer``, same model, data and machine.

    python benchmarks/bench_sft.py                        # comparisons (full and LoRA SFT) and scaling curve
    python benchmarks/bench_sft.py --suite compare --modes lora --steps 6 --force
    python benchmarks/bench_sft.py --suite ablation       # each lit-ft optimisation switched on and off
    python benchmarks/bench_sft.py --suite scaling        # both tools against sequence length and batch size
    python benchmarks/bench_sft.py --suite floor          # lit-ft's step floor (matmuls + attention) against TRL
    python benchmarks/bench_sft.py --device cuda --bf16 --only matched   # on a GPU, both tools in bf16 mixed precision

Every configuration runs in a fresh Python process (``--worker``) pinned to ``--threads`` cores, on the embedded
SmolLM2-135M-Instruct (``--model``: another alias or folder, or ``smollm2-135m-random``, its architecture with random
weights, for machines without the embedded model) and the tokenised rows of ``data/legal/train.jsonl`` (a realistic
mix of 40-250 token chats), in one fixed order shared by both tools, so each optimizer step of lit-ft and TRL sees the
same examples. Both tools run on one device (``--device``: CUDA when there is a GPU) in fp32 or, with ``--bf16``, in
bf16 mixed precision (a LoRA run's frozen base loaded in bf16 by both).
``--warmup`` steps are run first and excluded. For each configuration it reports:

- non-padding tokens per second over the measured steps, and the mean step time (data, forward, backward, step);
- peak memory: the whole process' peak from its start to the end of the run (the resident-set high-water mark on
  CPU, ``max_memory_allocated`` on CUDA), and beside it the peak during training only;
- MFU: ``6 * N * tokens/s`` over a matrix-multiply peak measured on this machine for the dtype in use
  (N = all parameters; for LoRA the real work is nearer ``4 * N`` per token, so its MFU reads high);
- the training loss of the first and the last step (the same batches, so the same loss within noise).

The table goes to ``benchmarks/RESULTS.md`` (``--out``) with the machine, the load average and the settings; the
scaling suite's tokens/s and peak memory against T and B are also drawn to ``scaling.png`` beside it.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import (
    LORA,
    MODEL,
    RANDOM_MODEL,
    REPO,
    Config,
    StepRecorder,
    Target,
    add_common_arguments,
    bf16_is_fast,
    counting_trainer,
    fmt,
    litft_optimization,
    litft_trainer,
    machine_line,
    mfu_percent,
    model_dtype,
    parameter_counts,
    prepare_model,
    ratio_cells,
    resolve_device,
    run_all,
    select,
    steps_line,
    target_lines,
    train_trl,
    trl_arguments,
    trl_timer,
    worker,
    write_table_section,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DATA = REPO / "data" / "legal" / "train.jsonl"
LORA_DROPOUT = 0.0  # lora_legal's (conf/experiment/lora_legal.yaml), in both tools
FREE = {"batching": "padding_free", "attn": "sdpa_varlen"}  # lit-ft's shipped SFT batches
FREE_LABEL = "padding-free, sdpa_varlen"


# --- data -------------------------------------------------------------------------------------------------------


def tokenised_examples(cfg: Config, tokenizer) -> list[dict[str, list[int]]]:
    """The training rows, tokenised by lit-ft (assistant-only labels), in one seeded order; both tools use these.

    For the scaling curve (``seq_len``), the rows are concatenated and cut into rows of exactly ``seq_len``.
    """
    import random

    from lit_ft.data import SFTDataModule

    datamodule = SFTDataModule(tokenizer, train_files=DATA, max_length=cfg.max_length, val_ratio=0.0)
    datamodule.setup("fit")
    examples = [{k: e[k] for k in ("input_ids", "labels", "task_ids")} for e in datamodule.train_examples]
    random.Random(cfg.seed).shuffle(examples)
    if cfg.seq_len:
        stream = {k: [v for e in examples * 40 for v in e[k]] for k in ("input_ids", "labels", "task_ids")}
        count = len(stream["input_ids"]) // cfg.seq_len
        L = cfg.seq_len
        examples = [{k: v[i * L : (i + 1) * L] for k, v in stream.items()} for i in range(count)]
    needed = (cfg.warmup + cfg.steps) * cfg.batch_size
    while len(examples) < needed:
        examples = examples + examples
    return examples


# --- lit-ft -----------------------------------------------------------------------------------------------------


def run_litft(cfg: Config) -> dict[str, Any]:
    import lightning as L
    from torch.utils.data import DataLoader

    from lit_ft.data import Collator, pack_examples
    from lit_ft.data.sampler import LengthGroupedSampler
    from lit_ft.models import LoRA, load_model, load_tokenizer
    from lit_ft.modules import SFTModule

    L.seed_everything(cfg.seed, verbose=False)
    tokenizer = load_tokenizer(cfg.model)
    examples = tokenised_examples(cfg, tokenizer)
    sampler = None
    if cfg.batching == "grouped":
        sampler = LengthGroupedSampler(examples, [len(e["input_ids"]) for e in examples], cfg.batch_size, seed=cfg.seed)
    if cfg.batching == "packed":
        examples = pack_examples(examples, cfg.max_length)
    collator = Collator(tokenizer.pad_token_id, padding_free=cfg.batching == "padding_free")
    loader = DataLoader(examples, batch_size=cfg.batch_size, shuffle=False, sampler=sampler, collate_fn=collator)

    recorder = StepRecorder(cfg)
    module = SFTModule(
        model=partial(
            load_model,
            cfg.model,
            dtype=model_dtype(cfg),
            attn_implementation=cfg.attn,
            gradient_checkpointing=cfg.gradient_checkpointing,
        ),
        adapter=LoRA(**LORA, dropout=cfg.lora_dropout, addmm=cfg.lora_addmm) if cfg.mode == "lora" else None,
        head_on_loss_tokens=cfg.head_on_loss_tokens,
        compile=cfg.compile,
        **litft_optimization(cfg),
    )
    litft_trainer(cfg, recorder).fit(module, train_dataloaders=loader)
    return recorder.summary(cfg, *parameter_counts(module))


# --- TRL --------------------------------------------------------------------------------------------------------


def run_trl(cfg: Config) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from lit_ft.models import load_tokenizer, resolve_model_path

    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    examples = tokenised_examples(cfg, tokenizer)
    rows = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    recorder = StepRecorder(cfg)

    matched = {"padding_free": cfg.batching == "padding_free", "packing": cfg.batching == "packed"}
    sft_args = {"max_length": cfg.max_length if not cfg.seq_len else cfg.seq_len}
    if cfg.batching == "grouped":
        sft_args["train_sampling_strategy"] = "group_by_length"
    args = SFTConfig(**{**trl_arguments(cfg, matched), **sft_args})
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(cfg.model), dtype=getattr(torch, model_dtype(cfg)), attn_implementation="sdpa"
    )
    peft_config = None
    if cfg.mode == "lora":
        peft_config = LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=cfg.lora_dropout, target_modules="all-linear"
        )
    trainer = counting_trainer(SFTTrainer, recorder)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[trl_timer(recorder)],
    )
    return train_trl(trainer, cfg, recorder)


def run(cfg: Config) -> dict[str, Any]:
    return run_litft(cfg) if cfg.tool == "lit-ft" else run_trl(cfg)


# --- orchestration ----------------------------------------------------------------------------------------------


def run_settings(steps: int, warmup: int, threads: int, **settings: Any) -> dict[str, Any]:
    """What every configuration of a suite shares: the protocol (steps, warm-up, threads), lora_legal's adapter
    dropout and ``settings`` (``model``, ``device``, ``precision``)."""
    return {"steps": steps, "warmup": warmup, "threads": threads, "lora_dropout": LORA_DROPOUT, **settings}


def matched_label(settings: dict[str, Any]) -> str:
    """The label of the matched configuration (both tools padded, no checkpointing, the run's precision)."""
    return f"{settings.get('precision', 'fp32')} padded"


def comparison_configs(modes: list[str], steps: int, warmup: int, threads: int, **settings: Any) -> list[Config]:
    """Matched settings (the run's precision, padded, no checkpointing on both) and each tool's recommended defaults.

    lit-ft's defaults are the shipped config's: padding-free batches with ``sdpa_varlen`` attention, the LM head
    on loss tokens, fused AdamW, fp32 on CPU. TRL's are ``SFTConfig()``'s own: gradient checkpointing, padded
    batches, fused AdamW and bf16 autocast, except that bf16 is switched off on machines without native bf16
    (CPUs without AVX512-BF16/AMX), where bf16 matmuls run 10-50x slower than fp32 and no user would keep it.
    ``settings``: of every configuration (``model``, ``device``, ``precision``).
    """
    base = run_settings(steps, warmup, threads, **settings)
    trl_label = "SFTConfig()" + ("" if bf16_is_fast(settings.get("device", "auto")) else " with bf16=False")
    matched = matched_label(settings)
    configs = []
    for mode in modes:
        configs += [
            Config("trl", mode, "matched", matched, **base),
            Config("lit-ft", mode, "matched", matched, **base),
            Config("trl", mode, "defaults", trl_label, trl_defaults=True, **{**base, "precision": "fp32"}),
            Config("lit-ft", mode, "defaults", FREE_LABEL, **FREE, **base),
        ]
    return configs


def floor_configs(modes: list[str], steps: int, warmup: int, threads: int, **settings: Any) -> list[Config]:
    """Per mode, TRL's matched run (the targets' reference) and lit-ft's defaults under ``torch.profiler``, whose
    matmuls and attention give lit-ft's step floor (:func:`common.operator_floor`)."""
    import tempfile

    base = run_settings(steps, warmup, threads, **settings)
    matched = matched_label(settings)
    configs = []
    for mode in modes:
        profile = str(Path(tempfile.gettempdir()) / f"bench_sft_floor_{mode}.txt")
        configs += [
            Config("trl", mode, "floor", matched, **base),
            Config("lit-ft", mode, "floor", FREE_LABEL, profile=profile, **FREE, **base),
        ]
    return configs


def ablation_configs(modes: list[str], steps: int, warmup: int, threads: int, **settings: Any) -> list[Config]:
    """lit-ft with one optimisation changed at a time (bf16 only where the machine has native bf16)."""
    base = {"setting": "ablation", **run_settings(steps, warmup, threads, **settings)}
    in_backward = {"optimizer_in_backward": True, "gradient_clip_val": None}  # clipping needs all gradients
    configs = []
    for mode in modes:
        configs += [
            Config("lit-ft", mode, label="padded, full-logits head", head_on_loss_tokens=False, **base),
            Config("lit-ft", mode, label="padded", **base),
            Config("lit-ft", mode, label="length-grouped", batching="grouped", **base),
            Config("lit-ft", mode, label="padding-free, sdpa", batching="padding_free", **base),
            Config("lit-ft", mode, label=FREE_LABEL, **FREE, **base),
            Config("lit-ft", mode, label="packed 256, sdpa_varlen", batching="packed", attn="sdpa_varlen", **base),
            Config("lit-ft", mode, label="+ grad ckpt", gradient_checkpointing=True, **FREE, **base),
            Config("lit-ft", mode, label="+ compile", compile=True, **FREE, **base),
            Config("lit-ft", mode, label="+ optimizer in backward, no clip", **in_backward, **FREE, **base),
        ]
        if mode == "lora":
            configs += [
                Config("lit-ft", mode, label="+ LoRA dropout 0.05", **FREE, **{**base, "lora_dropout": 0.05}),
                Config("lit-ft", mode, label="+ peft's LoRA forward (no addmm)", lora_addmm=False, **FREE, **base),
            ]
        if base.get("precision", "fp32") == "fp32" and bf16_is_fast(base.get("device", "auto")):
            configs.append(Config("lit-ft", mode, label="+ bf16-mixed", **FREE, **{**base, "precision": "bf16"}))
    return configs


SCALING_LENGTHS = (128, 256, 512, 1024, 2048)  # T, at batch 1
SCALING_BATCHES = (1, 2, 4, 8)  # B, at T = SCALING_BATCH_LENGTH
SCALING_BATCH_LENGTH = 256
TOOL_COLORS = {"lit-ft": "C0", "trl": "C1"}  # one colour per tool in every panel
SCALING_PLOT = "scaling.png"  # written beside the report (benchmarks/scaling.png by default)


def scaling_label(seq_len: int, batch_size: int) -> str:
    return f"T={seq_len} B={batch_size}"


def scaling_configs(steps: int, warmup: int, threads: int, **settings: Any) -> list[Config]:
    """LoRA tokens/s and peak memory against sequence length (batch 1) and batch size (T = 256), TRL then lit-ft
    at each point, both on the same rows of exactly T tokens (:func:`tokenised_examples`).

    TRL runs the matched comparison's settings (the run's precision, padded batches, no gradient checkpointing:
    rows of equal length need no padding), lit-ft its defaults (padding-free rows, ``sdpa_varlen``). One more
    lit-ft point at the longest T adds gradient checkpointing: the memory it saves where activations are largest.
    The point T = 256, B = 1 belongs to both curves and runs once.
    """
    base = {"setting": "scaling", "mode": "lora", **run_settings(steps, warmup, threads, **settings)}
    tools = {"trl": {}, "lit-ft": FREE}
    points = [(n, 1) for n in SCALING_LENGTHS]
    points += [(SCALING_BATCH_LENGTH, b) for b in SCALING_BATCHES if (SCALING_BATCH_LENGTH, b) not in points]
    configs = [
        Config(tool, label=scaling_label(n, b), seq_len=n, batch_size=b, **tools[tool], **base)
        for n, b in points
        for tool in tools
    ]
    longest = max(SCALING_LENGTHS)
    configs.append(
        Config(
            "lit-ft",
            label=f"{scaling_label(longest, 1)} grad ckpt",
            seq_len=longest,
            batch_size=1,
            gradient_checkpointing=True,
            **tools["lit-ft"],
            **base,
        )
    )
    return configs


def plot_scaling(results: list[tuple[Config, dict]], path: Path) -> Figure | None:
    """Draw the scaling rows of ``results`` to ``path`` (PNG) and return the figure; ``None`` without any.

    Top row: tokens/s and peak memory against T at batch 1; bottom row: against B at T = 256; one line per tool
    (lit-ft's gradient-checkpointing point as its own marker), log-2 x axes. A failed run is not a point: the
    figure's footnote names it.
    """
    rows = [(c, r) for c, r in results if c.setting == "scaling"]
    if not rows:
        return None
    from lit_ft.utils.plotting import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5), dpi=110)
    curves = [  # (x axis, which rows, their x)
        ("sequence length T (tokens, batch 1)", lambda c: c.batch_size == 1, lambda c: c.seq_len),
        (
            f"batch size B (T = {SCALING_BATCH_LENGTH})",
            lambda c: c.seq_len == SCALING_BATCH_LENGTH,
            lambda c: c.batch_size,
        ),
    ]
    panels = {"tokens_per_s": "tokens/s (wall clock)", "peak_mem_mb": "peak memory (MB)"}
    for row, (xlabel, on_curve, x_of) in zip(axes, curves):
        for axis, (key, ylabel) in zip(row, panels.items()):
            series: dict[tuple[str, bool], list[tuple[int, float]]] = {}
            for cfg, r in rows:
                if "error" not in r and on_curve(cfg):
                    series.setdefault((cfg.tool, cfg.gradient_checkpointing), []).append((x_of(cfg), r[key]))
            for (tool, checkpointed), points in sorted(series.items()):
                xs, ys = zip(*sorted(points))
                label, style = (f"{tool} + grad ckpt", "s") if checkpointed else (tool, "o-")
                axis.plot(xs, ys, style, color=TOOL_COLORS.get(tool), label=label)
            ticks = sorted({x for points in series.values() for x, _ in points})
            axis.set_xscale("log", base=2)
            axis.set_xticks(ticks, [str(t) for t in ticks])
            axis.minorticks_off()
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
            if series:
                axis.legend(fontsize=8)
    failed = [f"{c.tool} {c.label}" for c, r in rows if "error" in r]
    cfg = rows[0][0]
    figure.suptitle(f"LoRA scaling, lit-ft (defaults) and TRL (matched), {cfg.device} {cfg.precision}")
    if failed:
        figure.text(0.01, 0.01, "not plotted (run failed): " + ", ".join(failed), fontsize=8)
    figure.tight_layout(rect=(0, 0.03 if failed else 0, 1, 1))
    figure.savefig(path)
    plt.close(figure)
    return figure


def sft_target(name: str, mode: str, speed: float, memory: float) -> Target:
    """lit-ft's defaults row of ``mode`` against TRL's matched row (TRL's defaults but gradient checkpointing off)."""
    return Target(
        name,
        speed,
        memory,
        litft=lambda c: (c.tool, c.setting, c.mode) == ("lit-ft", "defaults", mode),
        trl=lambda c: (c.tool, c.setting, c.mode) == ("trl", "matched", mode),
    )


TARGETS = [
    sft_target("LoRA SFT (lora_legal settings)", "lora", 2.0, 0.75),
    sft_target("full SFT, defaults (clipping on)", "full", 2.0, 0.9),
]


def reference(results: list[tuple[Config, dict]], cfg: Config) -> dict | None:
    """The row ``cfg`` is compared with: TRL in the comparisons, TRL at the same T and B in the scaling curve, the
    padded lit-ft run in the ablation."""
    if cfg.setting in ("matched", "defaults") and cfg.tool == "lit-ft":
        wanted = lambda c: c.tool == "trl"  # noqa: E731
    elif cfg.setting == "scaling" and cfg.tool == "lit-ft":
        wanted = lambda c: c.tool == "trl" and (c.seq_len, c.batch_size) == (cfg.seq_len, cfg.batch_size)  # noqa: E731
    elif cfg.setting == "ablation" and cfg.label != "padded":
        wanted = lambda c: c.label == "padded"  # noqa: E731
    else:
        return None
    for c, r in results:
        if c.setting == cfg.setting and c.mode == cfg.mode and wanted(c) and "error" not in r:
            return r
    return None


def write_report(
    results: list[tuple[Config, dict]], peaks: dict[str, float], started_load: str, out: Path, model: str = MODEL
) -> str:
    """Write the SFT section of ``out`` (the other benchmarks' sections stay) and return it. ``model``: the
    ``--model`` the runs were asked for (:data:`RANDOM_MODEL` is named as such)."""
    device = results[0][0].device if results else "auto"
    precision = results[0][0].precision if results else "fp32"
    if model == MODEL:
        model_line = "SmolLM2-135M-Instruct (embedded)"
    elif model == RANDOM_MODEL:
        model_line = "SmolLM2-135M-Instruct's architecture with seeded random weights (its losses mean nothing)"
    else:
        model_line = f"`{model}`"
    mixed = "bf16 mixed precision (a LoRA run's frozen base in bf16)" if precision == "bf16" else "fp32"
    lines = [
        "# lit-ft vs TRL: fine-tuning step benchmark",
        "",
        "Written by `python benchmarks/bench_sft.py` (see docs/performance.md for how to read it).",
        "",
        f"- Machine: {machine_line(peaks, device)}; load average at the start: {started_load}.",
        f"- Device: {resolve_device(device)} for both tools; precision: {mixed}.",
        f"- Model: {model_line}; data: `data/legal/train.jsonl` tokenised by lit-ft "
        "(assistant-only labels), one fixed order for both tools; fused AdamW, constant LR (2e-5 full, 2e-4 LoRA "
        f"r=16 alpha=32 dropout {LORA_DROPOUT} all-linear, as lora_legal), gradient clipping 1.0.",
        "- steps/s and tokens/s (non-padding tokens): per second of wall time on an otherwise idle machine, the "
        "headline and what the speed ratios use first; tokens/CPU-s: per second of CPU time of the benchmark's "
        "threads (secondary). Memory: the whole process' peak resident set from its start to the end of the run "
        "(max allocated on CUDA), the ratios' memory; train peak: the peak during the training steps only. "
        "MFU = 6·N·tokens/CPU-s / the matmul peak measured in the run's process (N: parameters of the base model).",
        "",
    ]
    titles = {
        "matched": f"Matched settings ({precision}, padded batches of 4, max length 256, no gradient checkpointing)",
        "defaults": "Each tool's recommended defaults (batch 4, max length 256)",
        "ablation": "lit-ft ablation: one change at a time (ratios against the padded run)",
        "scaling": "Scaling: LoRA tokens/s and peak memory vs sequence length and batch size, lit-ft and TRL",
    }
    plot = plot_scaling(results, out.with_name(SCALING_PLOT))
    if any(c.setting == "defaults" for c, _ in results):
        lines += target_lines(TARGETS, results)
    for setting, title in titles.items():
        rows = [(c, r) for c, r in results if c.setting == setting]
        if not rows:
            continue
        lines += [f"## {title}", "", steps_line(rows), ""]
        if setting == "scaling":
            lines += [
                f"Lengths at batch 1, batch sizes at T = {SCALING_BATCH_LENGTH}; both tools train on the same rows "
                "of exactly T tokens. lit-ft runs its defaults (padding-free, sdpa_varlen), TRL the matched "
                f"settings ({precision}, padded, no gradient checkpointing); lit-ft's ratios are against TRL at "
                "the same T and B.",
                "",
                *([f"![tokens/s and peak memory against T and B]({SCALING_PLOT})", ""] if plot else []),
            ]
        lines += [
            "| mode | tool | settings | steps/s | tokens/s | tokens/CPU-s | step s | first step s | peak MB | "
            "train peak MB | MB at start | MFU % | loss step 1 | loss last | speed (wall) | speed (CPU time) | memory |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cfg, r in rows:
            if "error" in r:
                lines.append(f"| {cfg.mode} | {cfg.tool} | {cfg.label} | failed: {' '.join(r['error'])[:120]} |")
                continue
            speed_wall, speed_cpu, memory = ratio_cells(r, reference(results, cfg))
            lines.append(
                f"| {cfg.mode} | {cfg.tool} | {cfg.label} | {fmt(r.get('steps_per_s'), 3)} | {fmt(r['tokens_per_s'])} | "
                f"{fmt(r['tokens_per_cpu_s'])} | "
                f"{fmt(r['step_s'], 2)} | {fmt(r['first_step_s'], 1)} | {fmt(r['peak_mem_mb'], 0)} | "
                f"{fmt(r.get('train_peak_mb'), 0)} | {fmt(r.get('memory_at_start_mb'), 0)} | {fmt(mfu_percent(cfg, r, peaks), 1)} | "
                f"{fmt(r['loss_first'], 4)} | {fmt(r['loss_last'], 4)} | {speed_wall} | {speed_cpu} | {memory} |"
            )
        lines.append("")
    return write_table_section(out, "bench_sft", lines)


def floor_lines(results: list[tuple[Config, dict]], peaks: dict[str, float]) -> list[str]:
    """The floor table: per mode, TRL's matched step against lit-ft's step floor (its matmuls and attention, from
    the profiled run), and the most speed a change that keeps that work could reach, against the target; also
    with the matmuls at ``peaks`` (GFLOP/s per dtype: the highest the suite's runs measured)."""
    lines = [
        "| mode | TRL step s | lit-ft step s (profiled) | lit-ft matmuls s | their GFLOP/s | attention s | "
        "floor s | TRL step / floor | floor with matmuls at the peak s | TRL step / that | target | reached by removing overhead |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in dict.fromkeys(c.mode for c, _ in results):
        trl = next((r for c, r in results if (c.tool, c.mode) == ("trl", mode) and "error" not in r), None)
        ours = next((r for c, r in results if (c.tool, c.mode) == ("lit-ft", mode) and "floor" in r), None)
        if trl is None or ours is None:
            lines.append(f"| {mode} | not measured (a run failed; see the logs) |")
            continue
        cfg = next(c for c, _ in results if (c.tool, c.mode) == ("lit-ft", mode))
        floor = ours["floor"]
        peak = peaks.get(cfg.precision) or peaks["fp32"]
        at_floor = floor["matmul_s"] + floor["attention_s"]
        at_peak = floor["matmul_gflop"] / peak + floor["attention_s"]
        target = next(t.speed for t in TARGETS if t.litft(Config("lit-ft", mode, "defaults")))
        best = trl["step_s"] / at_floor
        lines.append(
            f"| {mode} | {trl['step_s']:.2f} | {ours['step_s']:.2f} | {floor['matmul_s']:.2f} | "
            f"{floor['matmul_gflop'] / floor['matmul_s']:.0f} | {floor['attention_s']:.2f} | {at_floor:.2f} | "
            f"{best:.2f}x | {at_peak:.2f} | {trl['step_s'] / at_peak:.2f}x | >= {target}x | "
            f"{'yes' if best >= target else 'no'} |"
        )
    return lines


def write_floor_report(
    results: list[tuple[Config, dict]], peaks: dict[str, float], started_load: str, out: Path
) -> str:
    """Write the floor section of ``out`` (``--suite floor``; the other sections stay) and return it."""
    lines = [
        "# lit-ft's step floor: the most speed that removing overhead can reach",
        "",
        'Written by `python benchmarks/bench_sft.py --suite floor` (see docs/performance.md, "The floor").',
        "",
        f"- Machine: {machine_line(peaks, results[0][0].device if results else 'auto')}; load average at the start: "
        f"{started_load}.",
        "- The model, data, batches and LoRA of `--suite compare`. TRL: the matched settings (padded, no "
        "gradient checkpointing), its step on wall clock. lit-ft: its shipped defaults, profiled "
        "(`torch.profiler`, which slows the step but hardly its long operators).",
        "- floor = the self time per step of lit-ft's matrix multiplies (`aten::mm`, `aten::addmm`) and attention "
        "kernels. A change that keeps that work (the same loss, the same FLOPs) cannot make the step shorter, so "
        "TRL step / floor is the most speed removing all other work (elementwise, optimizer, Python, data) could "
        "give. 'With matmuls at the peak': every matmul at the highest matmul peak the runs "
        "measured (above).",
        "",
        steps_line(results) if results else "",
        "",
        *floor_lines(results, peaks),
        "",
    ]
    return write_table_section(out, "bench_sft_floor", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument(
        "--suite",
        nargs="+",
        default=["compare", "scaling"],
        choices=["compare", "ablation", "scaling", "floor"],
        help="floor runs alone: its own section of --out and its own JSON",
    )
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--ablation-modes", nargs="+", default=["lora"], choices=["full", "lora"])
    parser.add_argument(
        "--model", default=MODEL, help=f"alias, folder or hub id both tools load, or {RANDOM_MODEL} (default: {MODEL})"
    )
    parser.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="both tools' device (auto: CUDA if any)"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 mixed precision for both tools (a LoRA run's base loaded in bf16)"
    )
    args = parser.parse_args()

    if args.worker:
        worker(Config(**json.loads(args.worker)), run)
        return
    if "floor" in args.suite and len(args.suite) > 1:
        parser.error("--suite floor runs alone (it writes its own section and JSON)")

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    settings = {"model": prepare_model(args.model), "device": device, "precision": "bf16" if args.bf16 else "fp32"}
    if "floor" in args.suite:
        configs = select(floor_configs(args.modes, args.steps, args.warmup, args.threads, **settings), args.only)
        json_out = args.out.with_name(f"{args.out.stem}_floor.json")
        run_all(configs, Path(__file__), json_out, partial(write_floor_report, out=args.out), args)
        return
    configs: list[Config] = []
    if "compare" in args.suite:
        configs += comparison_configs(args.modes, args.steps, args.warmup, args.threads, **settings)
    if "ablation" in args.suite:
        configs += ablation_configs(args.ablation_modes, args.steps, args.warmup, args.threads, **settings)
    if "scaling" in args.suite:
        configs += scaling_configs(args.steps, args.warmup, args.threads, **settings)
    report = partial(write_report, out=args.out, model=args.model)
    configs = select(configs, args.only)
    run_all(configs, Path(__file__), args.out.with_suffix(".json"), report, args)


if __name__ == "__main__":
    main()

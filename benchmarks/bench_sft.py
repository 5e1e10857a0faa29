"""Side-by-side fine-tuning benchmark: lit-ft against TRL's ``SFTTrainer``, same model, data and machine.

    python benchmarks/bench_sft.py                        # comparisons (full and LoRA SFT) and scaling curve
    python benchmarks/bench_sft.py --suite compare --modes lora --steps 6
    python benchmarks/bench_sft.py --suite ablation       # each lit-ft optimisation switched on and off

Every configuration runs in a fresh Python process (``--worker``) pinned to ``--threads`` cores, on the embedded
SmolLM2-135M-Instruct and the tokenised rows of ``data/legal/train.jsonl`` (a realistic mix of 40-250 token
chats), in one fixed order shared by both tools, so each optimizer step of lit-ft and TRL sees the same examples.
``--warmup`` steps are run first and excluded. For each configuration it reports:

- non-padding tokens per second over the measured steps, and the mean step time (data, forward, backward, step);
- peak memory during training: the process' resident set high-water mark on CPU (reset once the model is
  loaded, read after the last step), ``max_memory_allocated`` on CUDA;
- MFU: ``6 * N * tokens/s`` over a matrix-multiply peak measured on this machine for the dtype in use
  (N = all parameters; for LoRA the real work is nearer ``4 * N`` per token, so its MFU reads high);
- the training loss of the first and the last step (the same batches, so the same loss within noise).

The table goes to ``benchmarks/RESULTS.md`` (``--out``) with the machine, the load average and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "legal" / "train.jsonl"
MODEL = "smollm2-135m-instruct"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


@dataclass
class Config:
    """One benchmark run. ``batching``: padded | padding_free | grouped (length-grouped, padded) | packed."""

    tool: str  # "lit-ft" or "trl"
    mode: str  # "full" or "lora"
    setting: str  # "matched", "defaults", "ablation", "scaling"
    label: str = ""
    precision: str = "fp32"  # "fp32" or "bf16" (mixed: fp32 master weights, bf16 autocast)
    batching: str = "padded"
    attn: str = "sdpa"  # lit-ft: "sdpa", "sdpa_varlen" (per-example attention in padding-free rows), ...
    gradient_checkpointing: bool = False
    head_on_loss_tokens: bool = True
    compile: bool = False
    optimizer_in_backward: bool = False  # lit-ft: update each weight inside backward (needs no clipping)
    gradient_clip_val: float | None = 1.0  # lit-ft (TRL's matched runs clip at 1.0)
    lora_dropout: float = LORA["dropout"]
    batch_size: int = 4
    max_length: int = 256
    seq_len: int | None = None  # scaling curve: rows of exactly this many tokens (one causal sequence each)
    steps: int = 8
    warmup: int = 2
    threads: int = 2
    lr: float | None = None
    seed: int = 0
    trl_defaults: bool = False  # TRL: start from SFTConfig() defaults (bf16, gradient checkpointing) untouched
    profile: str | None = None  # write a torch.profiler table of the measured steps to this file
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.mode == "lora" else 2e-5)


# --- measurements shared by both tools ------------------------------------------------------------------------


def reset_peak_memory() -> float:
    """Reset the peak-memory counter; return the memory in use now (MB), the floor training adds to."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        in_use = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return in_use
    status = Path("/proc/self/status").read_text()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the resident-set high-water mark (Linux >= 4.0)
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def matmul_peak_gflops(dtype_name: str, threads: int) -> float:
    """Best of a few square matmuls (1024 and 2048) in ``dtype_name``: the machine's reachable GEMM rate.

    On CPU the time is the process' CPU time divided by ``threads`` (as for the training rates), so the peak
    is what the benchmark's threads reach while they run, whatever else shares the machine.
    """
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    best = 0.0
    for n in (1024, 2048, 4096) if device == "cuda" else (1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        a @ b
        for _ in range(3):
            clock = time.perf_counter if device == "cuda" else time.process_time
            if device == "cuda":
                torch.cuda.synchronize()
            start = clock()
            a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = (clock() - start) / (1 if device == "cuda" else threads)
            best = max(best, 2 * n**3 / elapsed / 1e9)
            if elapsed > 5:  # slow dtype on this machine: one sample is enough
                return best
    return best


class StepRecorder:
    """Wall time at the end of each optimizer step, non-padding tokens and loss of each step.

    With ``cfg.profile`` set, the measured steps run under ``torch.profiler`` and the table of operators by
    self CPU (or CUDA) time is written to that file.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []
        self.started = 0.0
        self.memory_at_start = 0.0
        self._pending_tokens = 0
        self._profiler = None

    def count(self, tokens: int) -> None:
        self._pending_tokens += tokens

    def step_end(self, loss: float | None) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.tokens.append(self._pending_tokens)
        self._pending_tokens = 0
        if loss is not None:
            self.losses.append(float(loss))
        if self.cfg.profile and len(self.ends) == self.cfg.warmup:
            import torch

            self._profiler = torch.profiler.profile(record_shapes=True)
            self._profiler.start()
        if self._profiler is not None and len(self.ends) == self.cfg.warmup + self.cfg.steps:
            self._profiler.stop()
            sort = "self_cuda_time_total" if self._profiler.use_device == "cuda" else "self_cpu_time_total"
            table = self._profiler.key_averages(group_by_input_shape=False).table(sort_by=sort, row_limit=40)
            Path(self.cfg.profile).write_text(table)
            self._profiler = None

    def summary(self, cfg: Config, params: int, trainable: int) -> dict[str, Any]:
        w = cfg.warmup
        if len(self.ends) < w + cfg.steps:
            raise RuntimeError(f"only {len(self.ends)} steps recorded, expected {w + cfg.steps}")
        seconds = self.ends[w + cfg.steps - 1] - self.ends[w - 1] if w else self.ends[cfg.steps - 1] - self.started
        cpu_seconds = self.cpu_ends[w + cfg.steps - 1] - self.cpu_ends[w - 1] if w else self.cpu_ends[cfg.steps - 1]
        tokens = sum(self.tokens[w : w + cfg.steps])
        return {
            "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / (cpu_seconds / cfg.threads),
            "step_s": seconds / cfg.steps,
            "first_step_s": self.ends[0] - self.started,
            "tokens_per_step": tokens / cfg.steps,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[w + cfg.steps - 1] if len(self.losses) >= w + cfg.steps else None,
            "losses": self.losses,
            "memory_at_start_mb": self.memory_at_start,
            "params": params,
            "trainable_params": trainable,
        }


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
    import torch
    from torch.utils.data import DataLoader

    from lit_ft.data import Collator, pack_examples
    from lit_ft.data.sampler import LengthGroupedSampler
    from lit_ft.models import LoRA, load_model, load_tokenizer
    from lit_ft.modules import SFTModule

    L.seed_everything(cfg.seed, verbose=False)
    tokenizer = load_tokenizer(MODEL)
    examples = tokenised_examples(cfg, tokenizer)
    sampler = None
    if cfg.batching == "grouped":
        sampler = LengthGroupedSampler(examples, [len(e["input_ids"]) for e in examples], cfg.batch_size, seed=cfg.seed)
    if cfg.batching == "packed":
        examples = pack_examples(examples, cfg.max_length)
    collator = Collator(tokenizer.pad_token_id, padding_free=cfg.batching == "padding_free")
    loader = DataLoader(examples, batch_size=cfg.batch_size, shuffle=False, sampler=sampler, collate_fn=collator)

    recorder = StepRecorder(cfg)

    class Timer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            recorder.memory_at_start = reset_peak_memory()
            recorder.started = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            recorder.count(int((batch["task_ids"] != -1).sum()))  # task_ids are -1 exactly on padding

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            recorder.step_end(trainer.callback_metrics.get("train/loss"))

    dtype = "bfloat16" if cfg.precision == "bf16" and cfg.mode == "lora" else "float32"  # frozen base in bf16
    module = SFTModule(
        model=partial(
            load_model,
            MODEL,
            dtype=dtype,
            attn_implementation=cfg.attn,
            gradient_checkpointing=cfg.gradient_checkpointing,
        ),
        # fused: as transformers' Trainer (so TRL) defaults to with torch >= 2.8
        optimizer=partial(torch.optim.AdamW, lr=cfg.learning_rate, weight_decay=0.0, fused=True),
        scheduler=lambda optimizer, num_training_steps: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        adapter=LoRA(**{**LORA, "dropout": cfg.lora_dropout}) if cfg.mode == "lora" else None,
        head_on_loss_tokens=cfg.head_on_loss_tokens,
        compile=cfg.compile,
        optimizer_in_backward=cfg.optimizer_in_backward,
    )
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        max_steps=cfg.warmup + cfg.steps,
        gradient_clip_val=cfg.gradient_clip_val,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Timer()],
    )
    trainer.fit(module, train_dataloaders=loader)
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return recorder.summary(cfg, params, trainable)


# --- TRL --------------------------------------------------------------------------------------------------------


def run_trl(cfg: Config) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lit_ft.models import load_tokenizer, resolve_model_path

    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(MODEL)
    examples = tokenised_examples(cfg, tokenizer)
    rows = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
    recorder = StepRecorder(cfg)

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            recorder.memory_at_start = reset_peak_memory()
            recorder.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            recorder.step_end(None)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                recorder.losses.append(float(logs["loss"]))

    required = {
        "output_dir": tempfile.mkdtemp(prefix="bench_trl_"),
        "per_device_train_batch_size": cfg.batch_size,
        "max_steps": cfg.warmup + cfg.steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "max_length": cfg.max_length if not cfg.seq_len else cfg.seq_len,
        "train_sampling_strategy": "sequential",  # the benchmark's own order, shared with lit-ft
        "seed": cfg.seed,
    }
    matched = {
        "bf16": cfg.precision == "bf16",
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "padding_free": cfg.batching == "padding_free",
        "packing": cfg.batching == "packed",
    }
    if cfg.batching == "grouped":
        required["train_sampling_strategy"] = "group_by_length"
    overrides = matched
    if cfg.trl_defaults:  # SFTConfig()'s own values, bf16 off where it is slow (see comparison_configs)
        overrides = {} if bf16_is_fast() else {"bf16": False}
    args = SFTConfig(**required, **overrides)
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(MODEL), dtype=torch.float32, attn_implementation="sdpa"
    )
    peft_config = None
    if cfg.mode == "lora":
        peft_config = LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=cfg.lora_dropout, target_modules="all-linear"
        )

    class CountingSFTTrainer(SFTTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            if "attention_mask" in inputs:
                recorder.count(int(inputs["attention_mask"].sum()))
            else:  # padding-free / packed: one row, no padding
                recorder.count(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *args, **kwargs)

    trainer = CountingSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[Timer()],
    )
    trainer.train()
    params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        **recorder.summary(cfg, params, trainable),
        "trl_bf16": args.bf16,
        "trl_gradient_checkpointing": args.gradient_checkpointing,
    }


def bf16_is_fast() -> bool:
    """Whether this machine has native bf16 matmuls (CUDA with bf16, or a CPU oneDNN runs bf16 on natively)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def worker(cfg: Config) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg.threads)
    sys.path.insert(0, str(REPO))
    result = run_litft(cfg) if cfg.tool == "lit-ft" else run_trl(cfg)
    return {**result, "peak_mem_mb": peak_memory_mb()}


# --- orchestration ----------------------------------------------------------------------------------------------


def run_isolated(cfg: Config, log_dir: Path) -> dict[str, Any]:
    """Run ``cfg`` in a fresh process pinned to ``cfg.threads`` cores; return its result (or the error)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
    env.update({"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"})
    command = [sys.executable, __file__, "--worker", json.dumps(asdict(cfg))]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= cfg.threads:
        command = ["taskset", "-c", f"0-{cfg.threads - 1}", *command]
    name = f"{cfg.setting}-{cfg.mode}-{cfg.tool}-{cfg.label or cfg.batching}".replace(" ", "_")
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    (log_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "wall_s": time.perf_counter() - start}
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def comparison_configs(modes: list[str], steps: int, warmup: int, threads: int) -> list[Config]:
    """Matched settings (fp32, padded, no checkpointing on both) and each tool's recommended defaults.

    lit-ft's defaults are the shipped config's: padding-free batches with ``sdpa_varlen`` attention, the LM head
    on loss tokens, fused AdamW, fp32 on CPU. TRL's are ``SFTConfig()``'s own: gradient checkpointing, padded
    batches, fused AdamW and bf16 autocast, except that bf16 is switched off on machines without native bf16
    (CPUs without AVX512-BF16/AMX), where bf16 matmuls run 10-50x slower than fp32 and no user would keep it.
    """
    base = {"steps": steps, "warmup": warmup, "threads": threads}
    free = {"batching": "padding_free", "attn": "sdpa_varlen"}
    trl_label = "SFTConfig()" + ("" if bf16_is_fast() else " with bf16=False")
    configs = []
    for mode in modes:
        configs += [
            Config("trl", mode, "matched", "fp32 padded", **base),
            Config("lit-ft", mode, "matched", "fp32 padded", **base),
            Config("trl", mode, "defaults", trl_label, trl_defaults=True, **base),
            Config("lit-ft", mode, "defaults", "padding-free, sdpa_varlen", **free, **base),
        ]
    return configs


def ablation_configs(modes: list[str], steps: int, warmup: int, threads: int) -> list[Config]:
    """lit-ft with one optimisation changed at a time (bf16 only where the machine has native bf16)."""
    base = {"steps": steps, "warmup": warmup, "threads": threads, "setting": "ablation"}
    free = {"batching": "padding_free", "attn": "sdpa_varlen"}
    in_backward = {"optimizer_in_backward": True, "gradient_clip_val": None}  # clipping needs all gradients
    configs = []
    for mode in modes:
        configs += [
            Config("lit-ft", mode, label="padded, full-logits head", head_on_loss_tokens=False, **base),
            Config("lit-ft", mode, label="padded", **base),
            Config("lit-ft", mode, label="length-grouped", batching="grouped", **base),
            Config("lit-ft", mode, label="padding-free, sdpa", batching="padding_free", **base),
            Config("lit-ft", mode, label="padding-free, sdpa_varlen", **free, **base),
            Config("lit-ft", mode, label="packed 256, sdpa_varlen", batching="packed", attn="sdpa_varlen", **base),
            Config("lit-ft", mode, label="+ grad ckpt", gradient_checkpointing=True, **free, **base),
            Config("lit-ft", mode, label="+ compile", compile=True, **free, **base),
            Config("lit-ft", mode, label="+ optimizer in backward, no clip", **in_backward, **free, **base),
        ]
        if mode == "lora":
            configs.append(Config("lit-ft", mode, label="+ LoRA dropout 0", lora_dropout=0.0, **free, **base))
        if bf16_is_fast():
            configs.append(Config("lit-ft", mode, label="+ bf16-mixed", precision="bf16", **free, **base))
    return configs


def scaling_configs(steps: int, warmup: int, threads: int) -> list[Config]:
    """LoRA step time and memory against sequence length (batch 1) and batch size (length 256)."""
    base = {"steps": steps, "warmup": warmup, "threads": threads, "setting": "scaling"}
    base.update(batching="padding_free", attn="sdpa_varlen")
    configs = [
        Config("lit-ft", "lora", label=f"T={n} B=1", seq_len=n, batch_size=1, max_length=n, **base)
        for n in (256, 1024, 2048)
    ]
    configs.append(
        Config(
            "lit-ft",
            "lora",
            label="T=2048 B=1 grad ckpt",
            seq_len=2048,
            batch_size=1,
            max_length=2048,
            gradient_checkpointing=True,
            **base,
        )
    )
    configs += [Config("lit-ft", "lora", label=f"T=256 B={b}", seq_len=256, batch_size=b, **base) for b in (4, 8)]
    return configs


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def machine_line(peaks: dict[str, float]) -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    model_name = ""
    if Path("/proc/cpuinfo").exists():
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model_name = match.group(1) if match else ""
    peak = ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peaks.items())
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model_name or device}, {os.cpu_count()} cores; torch {torch.__version__}; measured matmul peak: {peak}; "
        f"load average (1/5/15 min) at the end: {load}"
    )


def reference(results: list[tuple[Config, dict]], cfg: Config) -> dict | None:
    """The row ``cfg`` is compared with: TRL in the comparisons, the padded lit-ft run in the ablation."""
    if cfg.setting in ("matched", "defaults") and cfg.tool == "lit-ft":
        wanted = lambda c: c.tool == "trl"  # noqa: E731
    elif cfg.setting == "ablation" and cfg.label != "padded":
        wanted = lambda c: c.label == "padded"  # noqa: E731
    else:
        return None
    for c, r in results:
        if c.setting == cfg.setting and c.mode == cfg.mode and wanted(c) and "error" not in r:
            return r
    return None


def write_report(results: list[tuple[Config, dict]], peaks: dict[str, float], out: Path, started_load: str) -> str:
    lines = [
        "# lit-ft vs TRL: fine-tuning step benchmark",
        "",
        "Written by `python benchmarks/bench_sft.py` (see docs/performance.md for how to read it).",
        "",
        f"- Machine: {machine_line(peaks)}; load average at the start: {started_load}.",
        "- Model: SmolLM2-135M-Instruct (embedded); data: `data/legal/train.jsonl` tokenised by lit-ft "
        "(assistant-only labels), one fixed order for both tools; fused AdamW, constant LR (2e-5 full, 2e-4 LoRA "
        "r=16 alpha=32 dropout 0.05 all-linear), gradient clipping 1.0.",
        "- tokens/s: non-padding tokens per second of wall time; tokens/CPU-s: per second of CPU time of the "
        "benchmark's threads (robust when other processes share the cores: the ratios use it). Memory: peak "
        "resident set during training on CPU (max allocated on CUDA). MFU = 6·N·tokens/CPU-s / matmul peak "
        "(N: parameters of the base model).",
        "",
    ]
    titles = {
        "matched": "Matched settings (fp32, padded batches of 4, max length 256, no gradient checkpointing)",
        "defaults": "Each tool's recommended defaults (batch 4, max length 256)",
        "ablation": "lit-ft ablation: one change at a time (ratios against the padded run)",
        "scaling": "Scaling: LoRA step time and memory vs sequence length and batch (lit-ft defaults)",
    }
    for setting, title in titles.items():
        rows = [(c, r) for c, r in results if c.setting == setting]
        if not rows:
            continue
        c0 = rows[0][0]
        lines += [f"## {title}", "", f"{c0.warmup} warm-up steps excluded, {c0.steps} measured steps.", ""]
        lines += [
            "| mode | tool | settings | tokens/s | tokens/CPU-s | step s | first step s | peak MB | MB at start | MFU % | "
            "loss step 1 | loss last | speed (CPU time) | speed (wall) | memory |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cfg, r in rows:
            if "error" in r:
                lines.append(f"| {cfg.mode} | {cfg.tool} | {cfg.label} | failed: {' '.join(r['error'])[:120]} |")
                continue
            peak = peaks.get(cfg.precision) or peaks.get("fp32")
            n = r["params"] - (r["trainable_params"] if cfg.mode == "lora" else 0)
            mfu = 100 * 6 * n * r["tokens_per_cpu_s"] / (peak * 1e9) if peak else None
            ref = reference(results, cfg)
            speed_cpu = speed_wall = memory = "-"
            if ref:
                speed_cpu = f"{r['tokens_per_cpu_s'] / ref['tokens_per_cpu_s']:.2f}x"
                speed_wall = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x"
                memory = f"{r['peak_mem_mb'] / ref['peak_mem_mb']:.2f}x"
            lines.append(
                f"| {cfg.mode} | {cfg.tool} | {cfg.label} | {fmt(r['tokens_per_s'])} | {fmt(r['tokens_per_cpu_s'])} | "
                f"{fmt(r['step_s'], 2)} | {fmt(r['first_step_s'], 1)} | {fmt(r['peak_mem_mb'], 0)} | "
                f"{fmt(r.get('memory_at_start_mb'), 0)} | {fmt(mfu, 1)} | "
                f"{fmt(r['loss_first'], 4)} | {fmt(r['loss_last'], 4)} | {speed_cpu} | {speed_wall} | {memory} |"
            )
        lines.append("")
    text = "\n".join(lines)
    out.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--suite", nargs="+", default=["compare", "scaling"], choices=["compare", "ablation", "scaling"]
    )
    parser.add_argument("--modes", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--ablation-modes", nargs="+", default=["lora"], choices=["full", "lora"])
    parser.add_argument("--steps", type=int, default=8, help="measured optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps run first and excluded")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--only", nargs="*", help="run only configurations whose label contains one of these")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()

    if args.worker:
        cfg = Config(**json.loads(args.worker))
        print("RESULT " + json.dumps(worker(cfg)), flush=True)
        return

    started_load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    configs: list[Config] = []
    if "compare" in args.suite:
        configs += comparison_configs(args.modes, args.steps, args.warmup, args.threads)
    if "ablation" in args.suite:
        configs += ablation_configs(args.ablation_modes, args.steps, args.warmup, args.threads)
    if "scaling" in args.suite:
        configs += scaling_configs(max(2, args.steps // 2), 1, args.threads)
    if args.only:
        configs = [c for c in configs if any(o in c.label or o == c.setting for o in args.only)]

    peaks = {}
    for dtype in sorted({c.precision for c in configs} | {"fp32"}):
        code = f"from benchmarks.bench_sft import matmul_peak_gflops as f; print(f({dtype!r}, {args.threads}))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        peaks[dtype] = float(out.stdout.strip() or 0)
        print(f"matmul peak {dtype}: {peaks[dtype]:.0f} GFLOP/s", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench_sft_logs_"))
    results = []
    for cfg in configs:
        result = run_isolated(cfg, log_dir)
        results.append((cfg, result))
        brief = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
        print(f"{cfg.setting:9s} {cfg.mode:5s} {cfg.tool:7s} {cfg.label:28s} {brief or result}", flush=True)
        (args.out.with_suffix(".json")).write_text(
            json.dumps([{"config": asdict(c), "result": r} for c, r in results], indent=1)
        )
        write_report(results, peaks, args.out, started_load)
    print(write_report(results, peaks, args.out, started_load))
    print(f"\nlogs: {log_dir}")


if __name__ == "__main__":
    main()

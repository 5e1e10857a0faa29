"""Machinery shared by the side-by-side benchmarks (``bench_sft.py``, ``bench_preference.py``).

Each benchmark script defines its configurations and how to run one of them with lit-ft and with TRL; this
module runs every configuration in a fresh process pinned to ``--threads`` cores (all of them by default),
measures it the same way for both tools (wall-clock step times, CPU time, non-padding tokens, peak memory, losses
and metrics per step, the matmul peak measured in the same process right before the run) and writes the
script's Markdown section of ``benchmarks/RESULTS.md`` without touching the others.

What users wait for is wall-clock time on the whole machine, so that is the headline, and it is only
meaningful on an idle machine: before the first run the benchmark waits (bounded) until other processes use no
CPU, the tools are alternated and each configuration reports the best of its runs, and RESULTS are refused when
other processes used CPU during a run (judged by their CPU time, from ``/proc/stat`` less this process tree's
own; not by the load average, which the benchmark's own previous run inflates), unless ``--force``.
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
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the benchmarks import the lit_ft beside them, whatever else is installed
MODEL = "smollm2-135m-instruct"
LORA = {"r": 16, "alpha": 32}
# ``--model`` value for SmolLM2-135M-Instruct's architecture with seeded random weights and the embedded tokenizer:
# the real model's speed and memory on a machine without its weights (scripts/gpu_check.sh); its losses mean nothing.
RANDOM_MODEL = "smollm2-135m-random"
# SmolLM2-135M-Instruct's shape (its config.json), as arguments of lit_ft.models.tiny_llama: 134.5M parameters.
SMOLLM2_135M_SHAPE = {
    "hidden_size": 576,
    "num_layers": 30,
    "num_heads": 9,
    "num_kv_heads": 3,
    "intermediate_size": 1536,
}


@dataclass
class Config:
    """One benchmark run. ``batching``: padded | padding_free | grouped (length-grouped, padded) | packed."""

    tool: str  # "lit-ft" or "trl"
    mode: str  # "full" or "lora"
    setting: str  # "matched", "defaults", "ablation", "scaling"
    label: str = ""
    task: str = "sft"  # "sft", "dpo" or "reward"
    reference: str | None = None  # DPO: "precomputed", "adapter" or "copy"
    precision: str = "fp32"  # "fp32" or "bf16" (mixed: fp32 master weights, bf16 autocast)
    batching: str = "padded"
    attn: str = "sdpa"  # lit-ft: "sdpa", "sdpa_varlen" (per-example attention in padding-free rows), ...
    gradient_checkpointing: bool = False
    head_on_loss_tokens: bool = True
    compile: bool = False
    optimizer_in_backward: bool = False  # lit-ft: update each weight inside backward (needs no clipping)
    gradient_clip_val: float | None = 1.0  # lit-ft (TRL's matched runs clip at 1.0)
    batch_size: int = 4
    max_length: int = 256
    seq_len: int | None = None  # scaling curve: rows of exactly this many tokens (one causal sequence each)
    steps: int = 10
    warmup: int = 2
    threads: int = 2
    lr: float | None = None
    lora_dropout: float = 0.05
    lora_addmm: bool = True  # lit-ft: the scaled LoRA update added inside the B matmul (lit_ft/models/lora_addmm.py)
    seed: int = 0
    trl_defaults: bool = False  # TRL: start from its config class' defaults (bf16, gradient checkpointing) untouched
    profile: str | None = None  # write a torch.profiler table of the measured steps to this file
    model: str = MODEL  # what both tools load: an alias, a Hugging Face folder or a hub id
    device: str = "auto"  # "cpu", "cuda", or "auto" (CUDA when torch sees a GPU); both tools run on it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.mode == "lora" else 2e-5)

    @property
    def name(self) -> str:
        parts = [self.setting, self.task, self.mode, self.reference, self.tool, self.label or self.batching]
        return "-".join(p for p in parts if p).replace(" ", "_").replace("/", "_")


# --- measurements shared by both tools ------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"``: ``"auto"`` is CUDA when torch sees a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} (expected cpu, cuda or auto)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: torch sees no CUDA GPU on this machine")
    return device


def model_dtype(cfg: Config) -> str:
    """The dtype both tools load the model in: bf16 for a LoRA run in bf16 (the frozen base needs no fp32 master
    copy), else fp32 (full fine-tuning in bf16 keeps fp32 master weights under bf16 autocast)."""
    return "bfloat16" if cfg.precision == "bf16" and cfg.mode == "lora" else "float32"


def prepare_model(name: str) -> str:
    """What ``Config.model`` should name for ``--model name``: ``name`` itself, or for :data:`RANDOM_MODEL` a folder
    written once here (both tools then load the same random weights, and each process only reads them)."""
    if name != RANDOM_MODEL:
        return name
    from lit_ft.models import load_tokenizer, tiny_llama

    folder = Path(tempfile.mkdtemp(prefix="bench_model_"))
    tokenizer = load_tokenizer(MODEL)
    tiny_llama(tokenizer, **SMOLLM2_135M_SHAPE).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def reset_peak_memory(device: str = "auto") -> tuple[float, float]:
    """Reset the peak-memory counter; return the memory in use now (MB), the floor training adds to, and the peak
    reached before (MB: loading, a reference pass), which still counts toward the whole process' peak."""
    import torch

    if resolve_device(device) == "cuda":
        torch.cuda.synchronize()
        in_use, peak = torch.cuda.memory_allocated() / 2**20, torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        return in_use, peak
    status = Path("/proc/self/status").read_text()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the resident-set high-water mark (Linux >= 4.0)
    rss, hwm = (int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, hwm


def peak_memory_mb(device: str = "auto") -> float:
    import torch

    if resolve_device(device) == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def matmul_peak_gflops(dtype_name: str, threads: int, device: str = "auto") -> float:
    """Best of a few square matmuls (1024 and 2048) in ``dtype_name``: the machine's reachable GEMM rate.

    On CPU the time is the process' CPU time divided by ``threads`` (as for the training rates), so the peak
    is what the benchmark's threads reach while they run, whatever else shares the machine.
    """
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    device = resolve_device(device)
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


def bf16_is_fast(device: str = "auto") -> bool:
    """Whether ``device`` has native bf16 matmuls (CUDA with bf16, or a CPU oneDNN runs bf16 on natively)."""
    import torch

    if resolve_device(device) == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


MATMUL_OPERATORS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
ATTENTION_MARKS = ("scaled_dot_product", "flash_attention", "flash_attn")


def matmul_gflop(key: str, shapes: list[list[int]]) -> float:
    """GFLOP of one call of a :data:`MATMUL_OPERATORS` operator from its input shapes (2·m·k·n per product)."""
    a, b = shapes[1:3] if key in ("aten::addmm", "aten::baddbmm") else shapes[:2]
    batch = a[0] if len(a) == 3 else 1
    return 2 * batch * a[-2] * a[-1] * b[-1] / 1e9


def operator_floor(averages: Any, steps: int, device_time: bool = False) -> dict[str, float]:
    """Per optimizer step: the self seconds and GFLOP of the matrix multiplies (:data:`MATMUL_OPERATORS`) and the
    self seconds of the attention kernels (operators named with one of :data:`ATTENTION_MARKS`), from a profile of
    ``steps`` steps (``averages``: ``torch.profiler``'s ``key_averages(group_by_input_shape=True)`` of a profile
    that recorded shapes; CUDA kernel time with ``device_time``). Self times do not count an operator's children,
    so nothing is counted twice.

    A change that keeps these operators' work cannot make the step shorter than their time: the step's floor."""
    floor = {"matmul_s": 0.0, "matmul_gflop": 0.0, "attention_s": 0.0}
    for event in averages:
        seconds = (event.self_device_time_total if device_time else event.self_cpu_time_total) / 1e6 / steps
        if event.key in MATMUL_OPERATORS:
            floor["matmul_s"] += seconds
            floor["matmul_gflop"] += event.count * matmul_gflop(event.key, event.input_shapes) / steps
        elif any(mark in event.key for mark in ATTENTION_MARKS):
            floor["attention_s"] += seconds
    return floor


class StepRecorder:
    """Wall time at the end of each optimizer step, non-padding tokens, loss and metrics of each step.

    ``metrics`` holds one list per metric name (reward accuracy, say), one value per step. :meth:`phase` times
    work done once before training (a pass of reference log-probs), reported apart from the steps.
    With ``cfg.profile`` set, the measured steps run under ``torch.profiler``: the table of operators by self
    CPU (or CUDA) time is written to that file, and the step's floor (:func:`operator_floor`) goes in the summary.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.phases: dict[str, float] = {}
        self.started = 0.0
        self.memory_at_start = 0.0
        self.peak_before_train = 0.0
        self._pending_tokens = 0
        self._profiler = None
        self.floor: dict[str, float] = {}

    def count(self, tokens: int) -> None:
        self._pending_tokens += tokens

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the wall and CPU seconds of the block to ``<name>_s`` and ``<name>_cpu_s``."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.phases[f"{name}_s"] = self.phases.get(f"{name}_s", 0.0) + time.perf_counter() - wall
        self.phases[f"{name}_cpu_s"] = self.phases.get(f"{name}_cpu_s", 0.0) + time.process_time() - cpu

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
            device = self._profiler.use_device == "cuda"
            averages = self._profiler.key_averages(group_by_input_shape=False)
            sort = "self_cuda_time_total" if device else "self_cpu_time_total"
            Path(self.cfg.profile).write_text(averages.table(sort_by=sort, row_limit=40))
            self.floor = operator_floor(self._profiler.key_averages(group_by_input_shape=True), self.cfg.steps, device)
            self._profiler = None

    def record(self, values: dict[str, Any], names: dict[str, str]) -> None:
        """Append ``values[theirs]`` to ``metrics[ours]`` for each ``ours: theirs`` of ``names`` present in ``values``."""
        for ours, theirs in names.items():
            if values.get(theirs) is not None:
                self.metrics[ours].append(float(values[theirs]))

    def summary(self, cfg: Config, params: int, trainable: int) -> dict[str, Any]:
        w = cfg.warmup
        last = w + cfg.steps - 1
        if len(self.ends) < w + cfg.steps:
            raise RuntimeError(f"only {len(self.ends)} steps recorded, expected {w + cfg.steps}")
        seconds = self.ends[last] - self.ends[w - 1] if w else self.ends[cfg.steps - 1] - self.started
        cpu_seconds = self.cpu_ends[last] - self.cpu_ends[w - 1] if w else self.cpu_ends[cfg.steps - 1]
        tokens = sum(self.tokens[w : w + cfg.steps])
        result = {
            "steps_per_s": cfg.steps / seconds,
            "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / (cpu_seconds / cfg.threads),
            "step_s": seconds / cfg.steps,
            "first_step_s": self.ends[0] - self.started,
            "tokens_per_step": tokens / cfg.steps,
            "loss_first": self.losses[0] if self.losses else None,
            "loss_last": self.losses[last] if len(self.losses) > last else None,
            "losses": self.losses,
            "memory_at_start_mb": self.memory_at_start,
            "peak_before_train_mb": self.peak_before_train,
            "params": params,
            "trainable_params": trainable,
            **self.phases,
            **({"floor": self.floor} if self.floor else {}),
        }
        if self.metrics:
            result["metrics"] = dict(self.metrics)
            result["metrics_first"] = {k: v[0] for k, v in self.metrics.items() if v}
            result["metrics_last"] = {k: v[last] for k, v in self.metrics.items() if len(v) > last}
        return result


# --- lit-ft and TRL runs: what every benchmark sets the same way ------------------------------------------------


def litft_optimization(cfg: Config) -> dict[str, Any]:
    """``optimizer`` and ``scheduler`` arguments of a lit-ft module: fused AdamW (as transformers' Trainer, so TRL,
    defaults to with torch >= 2.8), no weight decay, constant LR."""
    from functools import partial

    import torch

    return {
        "optimizer": partial(torch.optim.AdamW, lr=cfg.learning_rate, weight_decay=0.0, fused=True),
        "scheduler": lambda optimizer, num_training_steps: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        "optimizer_in_backward": cfg.optimizer_in_backward,
    }


def litft_trainer(
    cfg: Config, recorder: StepRecorder, metrics: dict[str, str] | None = None, count_tokens: bool = True
):
    """A Lightning Trainer for ``warmup + steps`` optimizer steps that feeds ``recorder``: peak memory reset when
    training starts, non-padding tokens of each batch (``task_ids != -1``; unless ``count_tokens`` is off, for a
    module that counts its own), ``train/loss`` and the logged ``metrics`` (``ours: logged name``) after each step."""
    import lightning as L
    import torch

    device = resolve_device(cfg.device)

    class Timer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            recorder.memory_at_start, recorder.peak_before_train = reset_peak_memory(device)
            recorder.started = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if count_tokens:
                recorder.count(int((batch["task_ids"] != -1).sum()))  # task_ids are -1 exactly on padding

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if device == "cuda":
                torch.cuda.synchronize()
            recorder.step_end(trainer.callback_metrics.get("train/loss"))
            recorder.record(trainer.callback_metrics, metrics or {})

    return L.Trainer(
        accelerator={"cuda": "gpu", "cpu": "cpu"}[device],
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


def trl_arguments(cfg: Config, matched: dict[str, Any] | None = None) -> dict[str, Any]:
    """Arguments of a TRL config class (``SFTConfig``, ``DPOConfig``, ``RewardConfig``): the run's length, LR and
    order (the benchmark's own, shared with lit-ft), and unless ``cfg.trl_defaults`` the matched settings (fp32,
    no gradient checkpointing, no weight decay, clipping 1.0, plus ``matched``). With ``trl_defaults`` the config
    class keeps its own values, except bf16 on machines without native bf16 (see :func:`bf16_is_fast`)."""
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
        "train_sampling_strategy": "sequential",  # the benchmark's own order, shared with lit-ft
        "seed": cfg.seed,
        "use_cpu": resolve_device(cfg.device) == "cpu",  # the device lit-ft runs on
    }
    if cfg.trl_defaults:
        return {**required, **({} if bf16_is_fast(cfg.device) else {"bf16": False})}
    return {
        **required,
        "bf16": cfg.precision == "bf16",
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        **(matched or {}),
    }


def trl_timer(recorder: StepRecorder, metrics: dict[str, str] | None = None):
    """A transformers ``TrainerCallback`` feeding ``recorder``: peak memory reset when training starts, the end
    of each optimizer step, the logged ``loss`` and ``metrics`` (``ours: logged name``; needs ``logging_steps=1``)."""
    import torch
    from transformers import TrainerCallback

    device = resolve_device(recorder.cfg.device)

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            recorder.memory_at_start, recorder.peak_before_train = reset_peak_memory(device)
            recorder.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            recorder.step_end(None)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                recorder.losses.append(float(logs["loss"]))
                recorder.record(logs, metrics or {})

    return Timer()


def counting_trainer(trainer_class: type, recorder: StepRecorder) -> type:
    """``trainer_class`` counting the non-padding tokens of each training batch into ``recorder``."""

    class Counting(trainer_class):
        def training_step(self, model, inputs, *args, **kwargs):
            if "attention_mask" in inputs:
                recorder.count(int(inputs["attention_mask"].sum()))
            else:  # padding-free / packed: one row, no padding
                recorder.count(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, *args, **kwargs)

    return Counting


def parameter_counts(model) -> tuple[int, int]:
    """All and trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_trl(trainer, cfg: Config, recorder: StepRecorder) -> dict[str, Any]:
    """Train a TRL trainer; its result: the recorder's summary, with the precision and gradient checkpointing TRL
    ran with (its defaults may differ from ours)."""
    trainer.train()
    return {
        **recorder.summary(cfg, *parameter_counts(trainer.model)),
        "trl_bf16": trainer.args.bf16,
        "trl_gradient_checkpointing": trainer.args.gradient_checkpointing,
    }


# --- orchestration ----------------------------------------------------------------------------------------------


def worker(cfg: Config, run: Callable[[Config], dict[str, Any]]) -> None:
    """Run ``cfg`` in this (fresh) process and print its result on a ``RESULT`` line; the matmul peak (GFLOP/s, per
    dtype: fp32 and the run's) is measured here right before the run, on the same cores and in the same state.

    Memory: ``peak_mem_mb`` is the whole process' peak from its start to the end of the run (resident set on CPU,
    allocated on CUDA: loading, a reference pass and training alike), ``train_peak_mb`` the peak during training.
    """
    import torch

    torch.set_num_threads(cfg.threads)
    peaks = {dtype: matmul_peak_gflops(dtype, cfg.threads, cfg.device) for dtype in sorted({"fp32", cfg.precision})}
    result = run(cfg)
    train_peak = peak_memory_mb(cfg.device)
    memory = {"train_peak_mb": train_peak, "peak_mem_mb": max(train_peak, result.get("peak_before_train_mb", 0.0))}
    print("RESULT " + json.dumps({**result, **memory, "matmul_peak_gflops": peaks}), flush=True)


# --- is the machine ours? ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds the whole machine has been busy (``/proc/stat``, every process, exited ones too) and those of
    this process and its waited-for children (``os.times``), at one moment."""

    machine_s: float
    own_s: float


def cpu_sample() -> CpuSample:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system (idle iowait) irq softirq steal
    times = os.times()
    return CpuSample(
        busy / os.sysconf("SC_CLK_TCK"), times.user + times.system + times.children_user + times.children_system
    )


def others_cpu_seconds(before: CpuSample, after: CpuSample) -> float:
    """CPU seconds other processes used between two samples: the machine's busy time less this process tree's."""
    return max(0.0, (after.machine_s - before.machine_s) - (after.own_s - before.own_s))


def is_busy(others_s: float, wall_s: float, busy_cores: float) -> bool:
    """Whether other processes used more than ``busy_cores`` cores on average over ``wall_s`` seconds."""
    return others_s > busy_cores * max(wall_s, 1e-9)


def wait_until_idle(
    busy_cores: float,
    timeout_s: float,
    interval_s: float = 5.0,
    sample: Callable[[], CpuSample] = cpu_sample,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Sample other processes' CPU use every ``interval_s`` until an interval with at most ``busy_cores`` of it;
    give up after ``timeout_s``. Whether the machine became idle."""
    waited = 0.0
    while True:
        before = sample()
        sleep(interval_s)
        waited += interval_s
        others = others_cpu_seconds(before, sample())
        if not is_busy(others, interval_s, busy_cores):
            return True
        print(f"waiting for an idle machine: other processes used {others / interval_s:.2f} cores", flush=True)
        if waited >= timeout_s:
            return False


def run_isolated(cfg: Config, script: Path, log_dir: Path, repeat: int = 0) -> dict[str, Any]:
    """Run ``cfg`` with ``script --worker`` in a fresh process pinned to ``cfg.threads`` cores; return its result
    (or the error), with the 1-minute load average of the machine when it started and ended and the CPU seconds
    other processes used meanwhile (``others_cpu_s``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "MKL_NUM_THREADS": str(cfg.threads)}
    env.update({"TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"})
    command = [sys.executable, str(script), "--worker", json.dumps(asdict(cfg))]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= cfg.threads:
        command = ["taskset", "-c", f"0-{cfg.threads - 1}", *command]
    start, load, before = time.perf_counter(), os.getloadavg()[0], cpu_sample()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    others = others_cpu_seconds(before, cpu_sample())
    (log_dir / f"{cfg.name}{f'-{repeat}' if repeat else ''}.log").write_text(proc.stdout + proc.stderr)
    loads = {"load_start": load, "load_end": os.getloadavg()[0], "others_cpu_s": others}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "wall_s": time.perf_counter() - start, **loads}
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"], **loads}


REPEAT_KEYS = ("steps_per_s", "tokens_per_s", "tokens_per_cpu_s", "peak_mem_mb", "others_cpu_s", "error")


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the most optimizer steps per wall-clock second, with every run's rates, peak memory and other
    processes' CPU seconds beside it (``repeats``); the last error when no run succeeded."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = max(ok, key=lambda r: r["steps_per_s"])
    if len(runs) == 1:
        return best
    return {**best, "repeats": [{k: r.get(k) for k in REPEAT_KEYS} for r in runs]}


def schedule(configs: list[Config], repeats: int) -> list[tuple[int, Config]]:
    """The order of the runs: ``repeats`` rounds over ``configs``; in each, the configurations compared with each
    other (same setting, task and mode: both tools' rows) run back to back, in reverse order every other round, so
    neither tool always runs first (or right after the other's run)."""
    groups: dict[tuple, list[Config]] = {}
    for cfg in configs:
        groups.setdefault((cfg.setting, cfg.task, cfg.mode), []).append(cfg)
    order = []
    for repeat in range(repeats):
        for group in groups.values():
            order += [(repeat, cfg) for cfg in (group if repeat % 2 == 0 else group[::-1])]
    return order


def refusals(
    runs: dict[str, list[dict[str, Any]]], busy_cores: float, steps: int, warmup: int, repeats: int
) -> list[str]:
    """Why the runs must not become RESULTS: fewer than 10 measured steps, 2 warm-up steps or 2 runs per
    configuration, or a run during which other processes used more than ``busy_cores`` cores on average."""
    reasons = []
    if steps < 10 or warmup < 2 or repeats < 2:
        reasons.append(f"--steps {steps} --warmup {warmup} --repeats {repeats}: RESULTS need at least 10, 2 and 2")
    for name, results in runs.items():
        for i, r in enumerate(results):
            if "others_cpu_s" in r and "wall_s" in r and is_busy(r["others_cpu_s"], r["wall_s"], busy_cores):
                reasons.append(
                    f"{name} (run {i + 1}): other processes used {r['others_cpu_s']:.1f} CPU-s in {r['wall_s']:.0f} s"
                )
    return reasons


def peaks_of(results: list[tuple[Config, dict]]) -> dict[str, float]:
    """The highest matmul peak (GFLOP/s) each dtype reached in the runs (each measured right before its run)."""
    peaks: dict[str, float] = {}
    for _, r in results:
        for dtype, value in r.get("matmul_peak_gflops", {}).items():
            peaks[dtype] = max(peaks.get(dtype, 0.0), value)
    return peaks


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help="measured optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps run first and excluded")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores (default: all)")
    parser.add_argument("--only", nargs="*", help="run only configurations whose label contains one of these")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the best is reported")
    parser.add_argument("--update", action="store_true", help="keep the other configurations' saved results")
    parser.add_argument(
        "--busy-cores",
        type=float,
        default=0.1,
        help="other processes' mean CPU use (cores) above which a run counts as disturbed",
    )
    parser.add_argument("--idle-timeout", type=float, default=600, help="seconds to wait for an idle machine")
    parser.add_argument(
        "--force", action="store_true", help="write RESULTS even from disturbed runs or a shorter protocol"
    )


def select(configs: list[Config], only: list[str] | None) -> list[Config]:
    """The configurations whose label contains, or whose setting, task or reference is, one of ``only``."""
    if not only:
        return configs
    keys = lambda c: (c.setting, c.task, c.reference, c.mode)  # noqa: E731
    return [c for c in configs if any(o in c.label or o in keys(c) for o in only)]


def run_all(
    configs: list[Config],
    script: Path,
    json_out: Path,
    report: Callable[[list[tuple[Config, dict]], dict[str, float], str], str],
    args: argparse.Namespace,
) -> None:
    """Wait (at most ``args.idle_timeout`` s) for an idle machine, then run each configuration in a fresh process,
    ``args.repeats`` times in the order of :func:`schedule`; each configuration reports its best run
    (:func:`best_run`). ``json_out`` and the report are rewritten after each run while nothing stands against them
    (:func:`refusals`); otherwise, unless ``args.force``, they stay as they were and the run exits with status 1.

    With ``args.update`` the results already in ``json_out`` are kept, those of re-run configurations replaced.
    ``report(results, peaks, started_load)`` writes the report and returns its text.
    """
    if not wait_until_idle(args.busy_cores, args.idle_timeout):
        print(f"the machine stayed busy for {args.idle_timeout:.0f} s; running anyway", flush=True)
    started_load = load_average()
    log_dir = Path(tempfile.mkdtemp(prefix=f"{script.stem}_logs_"))
    previous = json.loads(json_out.read_text()) if args.update and json_out.exists() else []
    results = {Config(**e["config"]).name: (Config(**e["config"]), e["result"]) for e in previous}
    runs: dict[str, list[dict[str, Any]]] = {cfg.name: [] for cfg in configs}
    reasons: list[str] = []
    for repeat, cfg in schedule(configs, args.repeats):
        result = run_isolated(cfg, script, log_dir, repeat)
        runs[cfg.name].append(result)
        results[cfg.name] = (cfg, best_run(runs[cfg.name]))
        brief = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
        mode = cfg.mode if cfg.task == "sft" else f"{cfg.task}-{cfg.mode}"
        print(f"{cfg.setting:9s} {mode:5s} {cfg.tool:7s} {cfg.label:28s} {brief or result}", flush=True)
        reasons = refusals(runs, args.busy_cores, args.steps, args.warmup, args.repeats)
        if args.force or not reasons:
            rows = list(results.values())
            json_out.write_text(json.dumps([{"config": asdict(c), "result": r} for c, r in rows], indent=1))
            report(rows, peaks_of(rows), started_load)
    print(f"logs: {log_dir}")
    if reasons and not args.force:
        print("RESULTS not written (--force writes them anyway):\n- " + "\n- ".join(reasons), file=sys.stderr)
        sys.exit(1)
    rows = list(results.values())
    print(report(rows, peaks_of(rows), started_load))


# --- report -----------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def machine_line(peaks: dict[str, float], device: str = "auto") -> str:
    import torch

    cuda = resolve_device(device) == "cuda"
    device = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    model_name = ""
    if Path("/proc/cpuinfo").exists():
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model_name = match.group(1) if match else ""
    peak = ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in peaks.items())
    return (
        f"{device if cuda else model_name or device}, {os.cpu_count()} cores; torch {torch.__version__}; measured matmul peak: {peak}; "
        f"load average (1/5/15 min) at the end: {load_average()}"
    )


def mfu_percent(cfg: Config, r: dict, peaks: dict[str, float], flops_per_param_token: float = 6.0) -> float | None:
    """``flops_per_param_token * N * tokens/s`` over the matmul peak (the run's own, else ``peaks``), in percent (N:
    base-model parameters); the rate per CPU-second of the benchmark's threads on CPU (the peak is measured per
    CPU-second too), per wall second on CUDA."""
    own = r.get("matmul_peak_gflops", {})  # measured in the run's process, right before it
    peak = own.get(cfg.precision) or own.get("fp32") or peaks.get(cfg.precision) or peaks.get("fp32")
    n = r["params"] - (r["trainable_params"] if cfg.mode == "lora" else 0)
    rate = r["tokens_per_s"] if resolve_device(cfg.device) == "cuda" else r["tokens_per_cpu_s"]
    return 100 * flops_per_param_token * n * rate / (peak * 1e9) if peak else None


def steps_line(rows: list[tuple[Config, dict]]) -> str:
    """How the rows of a table were measured: warm-up and measured steps, the best of how many runs, the load
    average and the CPU time other processes took meanwhile."""
    cfg = rows[0][0]
    line = f"{cfg.warmup} warm-up steps excluded, {cfg.steps} measured steps."
    repeats = max(len(r.get("repeats", [r])) for _, r in rows)
    loads = [r[k] for _, r in rows for k in ("load_start", "load_end") if k in r]
    others = [x["others_cpu_s"] for _, r in rows for x in r.get("repeats", [r]) if x.get("others_cpu_s") is not None]
    if repeats > 1:
        line = line[:-1] + f"; tools alternated, each row the best of {repeats} runs (most steps/s, wall clock)."
    if loads:
        line += f" Load average (1 min) before and after each run: {min(loads):.1f}-{max(loads):.1f}."
    if others:
        line += f" Other processes' CPU time during a run: at most {max(others):.1f} s."
    return line


def ratio_cells(r: dict, ref: dict | None) -> list[str]:
    """Speed (wall), speed (CPU time) and memory of ``r`` as multiples of ``ref``'s (``-`` without a reference).

    Speeds are in optimizer steps (the same batches in both tools), not tokens: a layout that runs a shared prompt
    once has fewer tokens per step for the same work done."""
    if not ref:
        return ["-", "-", "-"]
    cpu_steps = lambda x: x["tokens_per_cpu_s"] / x["tokens_per_step"]  # noqa: E731  steps per CPU-second
    return [
        f"{r['steps_per_s'] / ref['steps_per_s']:.2f}x",
        f"{cpu_steps(r) / cpu_steps(ref):.2f}x",
        f"{r['peak_mem_mb'] / ref['peak_mem_mb']:.2f}x",
    ]


@dataclass(frozen=True)
class Target:
    """One of issue 17's targets: lit-ft's rows that ``litft`` selects against the TRL row that ``trl`` selects, at
    least ``speed`` times TRL's steps/s (wall clock) with at most ``memory`` times its whole-process peak memory."""

    name: str
    speed: float
    memory: float
    litft: Callable[[Config], bool]
    trl: Callable[[Config], bool]


def target_lines(targets: list[Target], results: list[tuple[Config, dict]]) -> list[str]:
    """A report table of each target: every lit-ft row it selects against its TRL row, the ratios and whether both
    are met (a failed run is named as such)."""
    lines = [
        "## Against the targets",
        "",
        "lit-ft's shipped defaults (and the candidate layouts a default is chosen from) against TRL with the same "
        "model, data, batch, LoRA, precision and max length, no gradient checkpointing, its other settings at its "
        "defaults. Speed: steps/s on wall clock; memory: the whole process' peak, start to end.",
        "",
        "| target | lit-ft | TRL | speed | needed | memory | needed | met |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for target in targets:
        trl = next(((c, r) for c, r in results if target.trl(c) and "error" not in r), None)
        for cfg, r in results:
            if not target.litft(cfg):
                continue
            cells = [target.name, cfg.label, trl[0].label if trl else "no run"]
            if "error" in r or trl is None:
                lines.append("| " + " | ".join(cells) + " | - | - | - | - | not measured |")
                continue
            speed = r["steps_per_s"] / trl[1]["steps_per_s"]
            memory = r["peak_mem_mb"] / trl[1]["peak_mem_mb"]
            missed = [
                name for name, ok in (("speed", speed >= target.speed), ("memory", memory <= target.memory)) if not ok
            ]
            verdict = "yes" if not missed else " and ".join(missed) + " missed"
            cells += [f"{speed:.3f}x", f">= {target.speed}x", f"{memory:.3f}x", f"<= {target.memory}x", verdict]
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_table_section(out: Path, key: str, lines: list[str]) -> str:
    """Write ``lines`` (a report section) as section ``key`` of ``out``; return its text."""
    text = "\n".join(lines)
    write_section(out, key, text)
    return text


def write_section(out: Path, key: str, text: str) -> None:
    """Put ``text`` in ``out`` between the markers of section ``key`` (replacing that section only, or appending it)."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = out.read_text() if out.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].strip("\n")
        new = head + block + ("\n" + tail + "\n" if tail else "")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    out.write_text(new)

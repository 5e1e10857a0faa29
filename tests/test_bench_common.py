"""The benchmarks' measuring protocol (benchmarks/common.py), without running a model: other processes' CPU time,
the wait for an idle machine, the refusal of disturbed RESULTS, the alternation of tools and the best of runs, the
whole-process peak memory, the ratios and the target table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import (  # noqa: E402
    Config,
    CpuSample,
    Target,
    add_common_arguments,
    best_run,
    cpu_sample,
    is_busy,
    others_cpu_seconds,
    peak_memory_mb,
    peaks_of,
    ratio_cells,
    refusals,
    reset_peak_memory,
    schedule,
    target_lines,
    wait_until_idle,
)


def test_other_processes_cpu_time_is_the_machines_less_our_own():
    before, after = CpuSample(machine_s=100.0, own_s=10.0), CpuSample(machine_s=130.0, own_s=35.0)
    assert others_cpu_seconds(before, after) == 5.0  # 30 s busy, 25 of them ours
    assert others_cpu_seconds(before, CpuSample(120.0, 31.0)) == 0.0  # clock-tick rounding never goes negative
    assert is_busy(5.0, wall_s=20.0, busy_cores=0.1) and not is_busy(1.0, wall_s=20.0, busy_cores=0.1)


def test_this_process_busy_work_is_not_counted_as_others():
    before = cpu_sample()
    total = sum(i * i for i in range(3_000_000))  # CPU time of our own
    after = cpu_sample()
    assert total > 0 and after.own_s - before.own_s > 0.05
    assert after.machine_s - before.machine_s >= (after.own_s - before.own_s) * 0.5  # /proc/stat sees it too


class FakeMachine:
    """Other processes use ``loads[i]`` cores during the i-th sampled interval; our own process stays idle."""

    def __init__(self, loads: list[float]) -> None:
        self.loads, self.interval, self.now, self.machine_s, self.slept = loads, 0, 0.0, 0.0, []

    def sample(self) -> CpuSample:
        return CpuSample(self.machine_s, 0.0)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.machine_s += self.loads[min(self.interval, len(self.loads) - 1)] * seconds
        self.interval += 1


def test_wait_for_an_idle_machine_returns_once_others_stop():
    machine = FakeMachine([1.0, 0.5, 0.02])
    assert wait_until_idle(busy_cores=0.1, timeout_s=60, interval_s=5, sample=machine.sample, sleep=machine.sleep)
    assert machine.slept == [5, 5, 5]  # two busy intervals, then an idle one


def test_wait_for_an_idle_machine_is_bounded():
    machine = FakeMachine([2.0])
    assert not wait_until_idle(busy_cores=0.1, timeout_s=12, interval_s=5, sample=machine.sample, sleep=machine.sleep)
    assert machine.slept == [5, 5, 5]  # gives up at the first interval ending at or past 12 s


def run(steps_per_s: float, others: float = 0.0, wall: float = 60.0) -> dict:
    return {"steps_per_s": steps_per_s, "tokens_per_s": 100 * steps_per_s, "others_cpu_s": others, "wall_s": wall}


def test_refusals_name_disturbed_runs_and_a_short_protocol():
    runs = {"a": [run(1.0), run(1.1, others=12.0)], "b": [run(2.0, others=1.0)]}
    reasons = refusals(runs, busy_cores=0.1, steps=10, warmup=2, repeats=2)
    assert reasons == ["a (run 2): other processes used 12.0 CPU-s in 60 s"]  # 1 CPU-s in 60 s is under 0.1 cores
    assert refusals({"b": runs["b"]}, 0.1, 10, 2, 2) == []
    short = refusals({"b": runs["b"]}, 0.1, steps=6, warmup=2, repeats=1)
    assert len(short) == 1 and "at least 10, 2 and 2" in short[0]
    assert refusals({"c": [{"error": ["boom"]}]}, 0.1, 10, 2, 2) == []  # a failed run is reported, not refused


def test_best_run_is_the_fastest_on_wall_clock_and_keeps_every_run():
    best = best_run([run(1.0), {"error": ["x"]}, run(1.5), run(1.2)])
    assert best["steps_per_s"] == 1.5
    assert [r["steps_per_s"] for r in best["repeats"]] == [1.0, None, 1.5, 1.2]
    assert best_run([{"error": ["a"]}, {"error": ["b"]}]) == {"error": ["b"]}
    assert "repeats" not in best_run([run(1.0)])


def test_schedule_alternates_the_tools_of_each_comparison():
    configs = [
        Config("trl", "lora", "matched"),
        Config("lit-ft", "lora", "matched"),
        Config("trl", "full", "matched"),
        Config("lit-ft", "full", "matched"),
    ]
    order = [(repeat, cfg.tool, cfg.mode) for repeat, cfg in schedule(configs, repeats=2)]
    assert order == [
        (0, "trl", "lora"),
        (0, "lit-ft", "lora"),
        (0, "trl", "full"),
        (0, "lit-ft", "full"),
        (1, "lit-ft", "lora"),
        (1, "trl", "lora"),
        (1, "lit-ft", "full"),
        (1, "trl", "full"),
    ]


def test_peaks_are_the_runs_own_measurements():
    rows = [(Config("trl", "lora", "matched"), {"matmul_peak_gflops": {"fp32": 170.0}}), (None, {"error": ["x"]})]
    rows.append((Config("lit-ft", "lora", "matched"), {"matmul_peak_gflops": {"fp32": 180.0, "bf16": 390.0}}))
    assert peaks_of(rows) == {"fp32": 180.0, "bf16": 390.0}


def test_defaults_are_the_protocol(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 7)
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args([])
    assert (args.threads, args.steps, args.warmup, args.repeats, args.force) == (7, 10, 2, 2, False)
    assert refusals({}, args.busy_cores, args.steps, args.warmup, args.repeats) == []
    assert Config("trl", "lora", "matched").steps == 10


@pytest.mark.parametrize("script", ["bench_sft", "bench_preference", "bench_rl"])
def test_the_scripts_take_the_protocol_options(script, tmp_path):
    """The scripts parse --force, --idle-timeout and --busy-cores (their --help lists them)."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / f"{script}.py"), "--help"], capture_output=True, text=True, cwd=repo
    )
    assert out.returncode == 0 and all(flag in out.stdout for flag in ("--force", "--idle-timeout", "--busy-cores"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resident-set high-water mark")
def test_the_peak_before_training_is_kept_when_the_counter_is_reset():
    """Memory a process held before training (loading, a reference pass) still counts toward its peak."""
    import torch

    block = torch.ones(64 * 2**20)  # 256 MB, touched, then freed
    del block
    in_use, peak_before = reset_peak_memory("cpu")
    assert peak_before >= in_use + 200  # the freed block is in the peak before the reset, not in use now
    assert peak_memory_mb("cpu") < peak_before - 200  # the counter itself starts again from what is in use


def test_ratios_compare_optimizer_steps_not_tokens():
    """A shared-prompt layout runs fewer tokens for the same pairs: its speed is in steps, as TRL's is."""
    trl = {
        "steps_per_s": 0.5,
        "tokens_per_s": 500.0,
        "tokens_per_cpu_s": 260.0,
        "tokens_per_step": 1000,
        "peak_mem_mb": 4000,
    }
    shared = {
        "steps_per_s": 1.0,
        "tokens_per_s": 600.0,
        "tokens_per_cpu_s": 312.0,
        "tokens_per_step": 600,
        "peak_mem_mb": 3000,
    }
    assert ratio_cells(shared, trl) == ["2.00x", "2.00x", "0.75x"]
    assert ratio_cells(shared, None) == ["-", "-", "-"]


def test_target_table_names_each_candidate_and_what_it_missed():
    is_trl = lambda c: c.tool == "trl"  # noqa: E731
    targets = [Target("LoRA", 2.0, 0.75, litft=lambda c: c.tool == "lit-ft", trl=is_trl)]
    results = [
        (Config("trl", "lora", "matched", "trl padded"), {"steps_per_s": 1.0, "peak_mem_mb": 1000.0}),
        (Config("lit-ft", "lora", "defaults", "fast"), {"steps_per_s": 2.5, "peak_mem_mb": 700.0}),
        (Config("lit-ft", "lora", "defaults", "slow"), {"steps_per_s": 1.5, "peak_mem_mb": 800.0}),
        (Config("lit-ft", "lora", "defaults", "broken"), {"error": ["RuntimeError"]}),
    ]
    rows = [line for line in target_lines(targets, results) if line.startswith("| LoRA")]
    assert rows == [
        "| LoRA | fast | trl padded | 2.500x | >= 2.0x | 0.700x | <= 0.75x | yes |",
        "| LoRA | slow | trl padded | 1.500x | >= 2.0x | 0.800x | <= 0.75x | speed and memory missed |",
        "| LoRA | broken | trl padded | - | - | - | - | not measured |",
    ]

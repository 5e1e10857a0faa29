"""The scaling suite of the SFT benchmark (benchmarks/bench_sft.py --suite scaling): lit-ft and TRL at every
sequence length and batch size on the same rows, the report's ratios per point, and the plot drawn from the
results."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from lit_ft.models import tiny_llama

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_sft import (  # noqa: E402
    SCALING_PLOT,
    plot_scaling,
    run,
    scaling_configs,
    tokenised_examples,
    write_report,
)
from common import Config  # noqa: E402

SETTINGS = {"model": "smollm2-135m-instruct", "device": "cpu", "precision": "fp32"}
LENGTHS = [128, 256, 512, 1024, 2048]
BATCHES = [1, 2, 4, 8]


def configs(steps: int = 10, warmup: int = 2, threads: int = 2, **settings) -> list[Config]:
    return scaling_configs(steps, warmup, threads, **{**SETTINGS, **settings})


def synthetic_results() -> list[tuple[Config, dict]]:
    """A result per configuration: TRL at 100 / (1 + T/1000) tokens/s and 1000 + T·B/2 MB, lit-ft at 1.5x the speed
    and 0.8x the memory (its checkpointed point 0.6x), and one failed run."""
    results = []
    for cfg in configs():
        speed = 100 / (1 + cfg.seq_len / 1000) * (1.5 if cfg.tool == "lit-ft" else 1.0)
        memory = (1000 + cfg.seq_len * cfg.batch_size / 2) * {"trl": 1.0, "lit-ft": 0.8}[cfg.tool]
        memory *= 0.75 if cfg.gradient_checkpointing else 1.0
        result = {"steps_per_s": speed / cfg.seq_len / cfg.batch_size, "tokens_per_s": speed}
        result.update(tokens_per_cpu_s=speed, tokens_per_step=cfg.seq_len * cfg.batch_size, peak_mem_mb=memory)
        result.update(step_s=1.0, first_step_s=2.0)
        result.update(loss_first=2.0, loss_last=1.5, params=1000, trainable_params=10)
        results.append((cfg, result))
    failed = next(i for i, (c, _) in enumerate(results) if c.tool == "trl" and c.label == "T=256 B=8")
    results[failed] = (results[failed][0], {"error": ["RuntimeError: out of memory"]})
    return results


def test_scaling_runs_both_tools_at_every_point():
    found = configs()
    points = {(c.tool, c.seq_len, c.batch_size, c.gradient_checkpointing) for c in found}
    expected = {(tool, n, 1, False) for tool in ("trl", "lit-ft") for n in LENGTHS}
    expected |= {(tool, 256, b, False) for tool in ("trl", "lit-ft") for b in BATCHES}
    assert points == expected | {("lit-ft", 2048, 1, True)}  # plus lit-ft's checkpointed point at the longest T
    assert len(found) == len(points) == 17  # each point once (T=256 B=1 is on both curves), names distinct
    assert len({c.name for c in found}) == 17
    for cfg in found:
        assert (cfg.setting, cfg.mode, cfg.precision, cfg.device, cfg.steps, cfg.warmup) == (
            "scaling",
            "lora",
            "fp32",
            "cpu",
            10,
            2,
        )
        assert cfg.label.startswith(f"T={cfg.seq_len} B={cfg.batch_size}")
        if cfg.tool == "trl":  # the matched comparison's settings
            assert (cfg.batching, cfg.attn, cfg.gradient_checkpointing, cfg.trl_defaults) == (
                "padded",
                "sdpa",
                False,
                False,
            )
        else:  # lit-ft's defaults
            assert (cfg.batching, cfg.attn) == ("padding_free", "sdpa_varlen")


def test_both_tools_train_on_the_same_rows_of_exactly_t_tokens(tokenizer):
    by_point: dict[tuple[int, int], dict[str, list]] = {}
    for cfg in configs(steps=2, warmup=1):
        if cfg.label in ("T=128 B=1", "T=256 B=1", "T=256 B=4"):
            by_point.setdefault((cfg.seq_len, cfg.batch_size), {})[cfg.tool] = tokenised_examples(cfg, tokenizer)
    for (length, batch), rows in by_point.items():
        assert rows["trl"] == rows["lit-ft"]
        assert len(rows["trl"]) >= 3 * batch  # warm-up and measured steps
        assert all(len(row[k]) == length for row in rows["trl"] for k in ("input_ids", "labels", "task_ids"))
        assert all(min(row["task_ids"]) >= 0 for row in rows["trl"])  # no padding: every token counts
    # every length cuts the same token stream: two rows of 128 are the first row of 256
    short, long = by_point[(128, 1)]["trl"], by_point[(256, 1)]["trl"]
    assert short[0]["input_ids"] + short[1]["input_ids"] == long[0]["input_ids"]
    assert short[0]["labels"] + short[1]["labels"] == long[0]["labels"]


def test_plot_scaling_draws_each_tool_against_t_and_b(tmp_path):
    results = synthetic_results()
    figure = plot_scaling(results, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (speed_t, memory_t), (speed_b, memory_b) = figure.axes[:2], figure.axes[2:]

    def lines(axis) -> dict[str, tuple[list, list]]:
        return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in axis.get_lines()}

    expected_speed = [100 / (1 + n / 1000) for n in LENGTHS]
    assert lines(speed_t)["trl"] == (LENGTHS, pytest.approx(expected_speed))
    assert lines(speed_t)["lit-ft"] == (LENGTHS, pytest.approx([1.5 * s for s in expected_speed]))
    assert lines(speed_t)["lit-ft + grad ckpt"] == ([2048], pytest.approx([1.5 * 100 / 3.048]))
    assert lines(memory_t)["trl"] == (LENGTHS, pytest.approx([1000 + n / 2 for n in LENGTHS]))
    assert lines(memory_t)["lit-ft + grad ckpt"] == ([2048], pytest.approx([0.6 * 2024]))
    # against B at T = 256: TRL's B=8 run failed, so its line stops at 4 and the figure names the failure
    assert lines(speed_b).keys() == {"trl", "lit-ft"}
    assert lines(memory_b)["lit-ft"] == (BATCHES, pytest.approx([0.8 * (1000 + 128 * b) for b in BATCHES]))
    assert lines(memory_b)["trl"] == ([1, 2, 4], pytest.approx([1000 + 128 * b for b in (1, 2, 4)]))
    assert any("trl T=256 B=8" in text.get_text() for text in figure.texts)
    for axis in figure.axes:
        assert axis.get_xscale() == "log" and axis.xaxis.get_transform().base == 2
    assert plot_scaling([(c, r) for c, r in results if c.setting != "scaling"], tmp_path / "none.png") is None


def test_report_lists_both_tools_per_point_with_ratios(tmp_path):
    out = tmp_path / "RESULTS.md"
    text = write_report(synthetic_results(), {"fp32": 100.0}, "0.0 / 0.0 / 0.0", out)
    section = text.split("## Scaling", 1)[1]
    assert f"]({SCALING_PLOT})" in section and (tmp_path / SCALING_PLOT).exists()  # linked, beside the report
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0] == "lora":
            rows[(cells[1], cells[2])] = cells
    for n, b in [(n, 1) for n in LENGTHS] + [(256, b) for b in BATCHES]:
        point = f"T={n} B={b}"
        assert ("trl", point) in rows and ("lit-ft", point) in rows
        if point == "T=256 B=8":
            assert rows[("trl", point)][3].startswith("failed: RuntimeError: out of memory")
            assert rows[("lit-ft", point)][-3:] == ["-", "-", "-"]  # nothing to compare with
        else:
            assert rows[("lit-ft", point)][-3:] == ["1.50x", "1.50x", "0.80x"]  # speed (wall, CPU), memory vs TRL
    assert rows[("lit-ft", "T=2048 B=1 grad ckpt")][-3:] == ["1.50x", "1.50x", "0.60x"]  # against TRL at T=2048


def test_trl_and_litft_run_a_scaling_point_on_the_same_tokens(tokenizer, tmp_path):
    """One point (T = 256, B = 2), one measured step, on a tiny model: TRL's path runs, both tools count T·B
    tokens per step and compute the same first loss (the LoRA update is still zero)."""
    pytest.importorskip("trl")
    folder = tmp_path / "tiny"
    tiny_llama(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    point = [c for c in configs(steps=1, warmup=1, threads=1, model=str(folder)) if c.label == "T=256 B=2"]
    assert [c.tool for c in point] == ["trl", "lit-ft"]
    results = {cfg.tool: run(cfg) for cfg in point}
    for result in results.values():
        assert result["tokens_per_step"] == 256 * 2 and result["tokens_per_s"] > 0
        assert math.isfinite(result["loss_first"])
    assert results["lit-ft"]["loss_first"] == pytest.approx(results["trl"]["loss_first"], rel=1e-4)

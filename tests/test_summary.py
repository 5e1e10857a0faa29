"""The terminal summary a run ends with: results before and after, then the run's facts."""

from __future__ import annotations

from rich.console import Console

from lit_ft.summary import print_summary

SFT_SUMMARY = {
    "experiment": "lora_legal",
    "output_dir": "/runs/lora_legal",
    "resumed_from": None,
    "val_loss_before": 4.494,
    "val_loss_after": 1.821,
    "val_before": {"val/loss/flag": 4.4567, "val/tokens/flag": 297.0, "val/loss": 4.494, "val/ppl": 89.47},
    "val_after": {"val/loss/flag": 1.325, "val/tokens/flag": 297.0, "val/loss": 1.821, "val/ppl": 6.18},
    "best_val_loss": 1.821,
    "train_tokens": 7219,
    "optimizer_steps": 45,
    "epochs": 1,
    "trainable_params": 4884480,
    "total_params": 139399488,
    "data": {"train": {"examples": 359, "tokens": 41010, "loss_tokens": 7219}},
    "perf": {"tokens_per_s": 137.88, "mfu": 0.3667, "peak_mem_gb": 5.32},
    "skipped_steps": 0,
    "early_stopping": {"monitor": "val/loss", "best_score": 1.821, "best_step": 44, "restored_best": True},
    "forgetting": {
        "baseline": {"mcq_acc": 0.5667, "prose_ppl": 12.79},
        "final": {"mcq_acc": 0.55, "prose_ppl": 12.78},
        "exceeded": [],
    },
    "samples": [{"prompt": "p", "before": "a", "after": "b"}],
    "model_path": "/runs/lora_legal/model",
    "seconds": 514.1,
}


def printed(summary: dict) -> list[str]:
    console = Console(record=True, width=140)
    print_summary(summary, console)
    return [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]


def test_results_show_each_metric_before_after_and_change_without_counts():
    lines = printed(SFT_SUMMARY)
    assert "val/loss 4.4940 1.8210 -2.6730" in lines
    assert "val/loss/flag 4.4567 1.3250 -3.1317" in lines
    assert "forgetting/mcq_acc 0.5667 0.5500 -0.0167" in lines
    assert not any("val/tokens" in line for line in lines)  # counts of what was scored are not results
    # val/loss first, then ppl, then the per-task losses
    order = [next(i for i, line in enumerate(lines) if line.startswith(n + " ")) for n in ("val/loss", "val/ppl")]
    assert order[0] < order[1] < lines.index("val/loss/flag 4.4567 1.3250 -3.1317")


def test_run_facts_are_worded_for_a_person():
    lines = printed(SFT_SUMMARY)
    assert "optimizer steps 45 (1 epoch)" in lines
    assert "trained on 7,219 loss tokens (data: 41,010 tokens in 359 examples)" in lines
    assert "trainable parameters 4,884,480 of 139,399,488 (3.50%)" in lines
    assert "early stopping best val/loss 1.8210 at step 44; its weights restored" in lines
    assert "throughput 137.9 tokens/s, MFU 36.7%, peak memory 5.32 GB" in lines
    assert "time 8 min 34 s" in lines
    assert "summary.json /runs/lora_legal/summary.json" in lines
    assert not any(line.startswith(("skipped steps", "resumed from", "samples")) for line in lines)


def test_mfu_says_what_peak_it_is_against():
    perf = {**SFT_SUMMARY["perf"], "mfu_basis": "datasheet peak (NVIDIA H100 80GB HBM3, bf16)"}
    lines = printed({**SFT_SUMMARY, "perf": perf})
    assert (
        "throughput 137.9 tokens/s, MFU 36.7% of the datasheet peak (NVIDIA H100 80GB HBM3, bf16), peak memory 5.32 GB"
        in lines
    )


def test_keys_a_module_adds_are_still_shown_and_missing_results_are_dashes():
    summary = {
        "experiment": "dpo_legal",
        "output_dir": "/runs/dpo",
        "val_after": {"val/loss": 0.431, "val/reward_accuracy": 0.906},  # resumed: no validation before training
        "train_pairs": 64,
        "skipped_steps": 2,
    }
    lines = printed(summary)
    assert "val/loss - 0.4310" in lines and "val/reward_accuracy - 0.9060" in lines
    assert "trained on 64 preference pairs" in lines
    assert "skipped steps 2 (non-finite loss or gradient)" in lines


def test_task_scores_show_before_and_after_and_their_cost():
    scores = {
        "prompts": 88,
        "checks": [{"step": 0, "seconds": 41.5, "tokens": 5632}, {"step": 44, "seconds": 20.5, "tokens": 1210}],
    }
    summary = {
        **SFT_SUMMARY,
        "val_before": {**SFT_SUMMARY["val_before"], "val/accuracy/classify": 0.0},
        "val_after": {**SFT_SUMMARY["val_after"], "val/accuracy/classify": 0.8333},
        "task_scores": {**scores, "seconds": 62.0, "tokens": 6842},
    }
    lines = printed(summary)
    assert "val/accuracy/classify 0.0000 0.8333 +0.8333" in lines
    assert "task scores 88 held-out prompts, 2 checks: 6,842 tokens generated in 1 min 2 s" in lines

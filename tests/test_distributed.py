"""Two CPU processes (gloo) against one: DDP and FSDP2 loss curves, sharded checkpoints, export, the pipeline.

All two-process scenarios run in one launch of tests/support/distributed_runs.py (one start-up, about a minute of CPU);
the one-process references run here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lit_ft.models import tiny_llama
from lit_ft.utils.resume import resume_checkpoint
from tests.support.distributed_runs import PER_RANK_BATCH, WORLD, Rows, dpo_module, dpo_run, fit, make_module, pair_data
from tests.support.helpers import REPO

# fp32 on one CPU: DDP and FSDP2 reduce the same per-token sums in another order (and pad per-rank batches to
# other lengths). Measured over the 6 steps: max |difference| 9.5e-7 (full) and 1.9e-6 (LoRA) on losses of ~10.
LOSS_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "support" / "distributed_runs.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def single_process_curves(tokenizer):
    """The same runs on one process with the global batch (2 ranks x 2 examples = 4)."""
    data = Rows(tokenizer, PER_RANK_BATCH * WORLD)
    return {
        name: fit(make_module(tokenizer, lora), "auto", data, devices=1)
        for name, lora in (("full", False), ("lora", True))
    }


@pytest.mark.parametrize("name", ["full", "lora"])
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_follow_the_one_process_loss_curve(runs, single_process_curves, strategy, name):
    _, results = runs
    reference = single_process_curves[name]
    assert len(reference) == 6 and reference[-1] < reference[0]  # it trains
    # fsdp: 4 steps (one epoch), a sharded checkpoint, a fresh process-pair module resumed from it for 2 more
    torch.testing.assert_close(torch.tensor(results[f"{strategy}_{name}"]), torch.tensor(reference), **LOSS_TOLERANCE)


def test_dpo_with_a_sharded_reference_copy_follows_one_process(runs, tokenizer, tmp_path):
    _, results = runs
    one = dpo_run(dpo_module(tokenizer), "auto", pair_data(tokenizer, tmp_path, 4 * WORLD), devices=1)
    assert results["dpo"]["before"] == pytest.approx(math.log(2), abs=1e-6)  # policy and reference shard alike
    assert one["val/loss"] < math.log(2) - 0.01  # it trains
    for name in ("val/loss", "val/rewards/margins", "val/rewards/accuracies", "val/logps/chosen"):
        assert results["dpo"][name] == pytest.approx(one[name], rel=1e-5, abs=1e-5), name


def test_sharded_checkpoint_is_a_shard_per_rank_and_lora_saves_only_adapters(runs):
    from torch.distributed.checkpoint import FileSystemReader

    out, _ = runs
    for name in ("full", "lora"):
        files = sorted(p.name for p in (out / f"fsdp_{name}.ckpt").iterdir())
        assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]
    saved = FileSystemReader(out / "fsdp_lora.ckpt").read_metadata().state_dict_metadata
    weights = [k for k in saved if k.startswith("state_dict.")]
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    full = FileSystemReader(out / "fsdp_full.ckpt").read_metadata().state_dict_metadata
    assert "state_dict.model.model.embed_tokens.weight" in full


def test_consolidated_export_has_the_logits_of_the_sharded_model(runs, tokenizer):
    out, results = runs
    probe = torch.load(out / "probe.pt")
    inputs = {"input_ids": probe["input_ids"], "attention_mask": probe["attention_mask"]}
    mask = probe["attention_mask"].bool()
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(out / "fsdp_full" / "model").eval()
        sharded = torch.load(out / "fsdp_full_logits.pt")
        torch.testing.assert_close(model(**inputs).logits[mask], sharded[mask], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(tiny_llama(tokenizer, seed=0)(**inputs).logits[mask], sharded[mask], atol=1e-3)

        lora_sharded = torch.load(out / "fsdp_lora_logits.pt")
        adapter = PeftModel.from_pretrained(tiny_llama(tokenizer, seed=0), out / "fsdp_lora" / "adapter").eval()
        torch.testing.assert_close(adapter(**inputs).logits[mask], lora_sharded[mask], atol=1e-5, rtol=1e-5)
        merged = AutoModelForCausalLM.from_pretrained(out / "fsdp_lora" / "model").eval()
        torch.testing.assert_close(merged(**inputs).logits[mask], lora_sharded[mask], atol=1e-4, rtol=1e-4)
    assert results["fsdp_lora_export"]["adapter_path"].endswith("fsdp_lora/adapter")


def test_pipeline_trains_checkpoints_and_exports_under_fsdp2(runs):
    out, results = runs
    summary = json.loads((out / "pipeline" / "summary.json").read_text())
    assert summary["optimizer_steps"] == 4 and summary["val_loss_after"] < summary["val_loss_before"]
    model = AutoModelForCausalLM.from_pretrained(out / "pipeline" / "model")
    assert summary["total_params"] == summary["trainable_params"] == sum(p.numel() for p in model.parameters())
    checkpoints = out / "pipeline" / "checkpoints"
    assert (checkpoints / "last.ckpt" / "__1_0.distcp").is_file()  # sharded, by both ranks
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]  # renamed into place, no leftovers
    for ckpt_path in ("last", str(checkpoints / "last.ckpt")):  # ckpt_path=last and an explicit folder resume
        assert resume_checkpoint(ckpt_path, out / "pipeline") == str(checkpoints / "last.ckpt")
    assert results["pipeline"]["model_path"] == str(out / "pipeline" / "model")

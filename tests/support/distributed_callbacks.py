"""The callbacks that run forwards of their own (forgetting check, generation samples) and early stopping with
restore, under FSDP2 on two CPU processes (gloo), and the same run on one process.

Run by tests/test_distributed_callbacks.py as ``python tests/support/distributed_callbacks.py OUT_DIR`` (two ranks); the
test runs :func:`run` itself for the one-process reference. Under FSDP2 every forward all-gathers each layer's
weights, a collective: a rank that runs one forward more than another waits for it forever. The process group
here times out after ``TIMEOUT`` so such a run fails instead of hanging.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.distributed.tensor import DTensor

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_ft.callbacks import EarlyStoppingWithRestore, ForgettingCheck, GenerationSamples  # noqa: E402
from lit_ft.models import load_tokenizer, tiny_llama  # noqa: E402
from lit_ft.modules import SFTModule  # noqa: E402
from lit_ft.strategies import FSDP2Strategy  # noqa: E402
from lit_ft.utils.distributed import local_part, reshard  # noqa: E402
from tests.support.distributed_runs import PER_RANK_BATCH, WORLD, Rows, loader  # noqa: E402
from tests.support.helpers import tiny_trainer  # noqa: E402

TIMEOUT = timedelta(seconds=60)
STEPS, VAL_EVERY = 6, 2
# val/loss reported by the validations after optimizer steps 2, 4 and 6: the minimum at step 4, then a rise
SCRIPTED_VAL_LOSS = {2: 2.0, 4: 1.0, 6: 1.5}
BEST_STEP = SAVE_STEP = 4
PROMPTS = [
    {"messages": [{"role": "user", "content": "What is 2 plus 3?"}]},
    {"text": "The capital of France is"},
]


class ScriptedValLoss(SFTModule):
    """Trains for real, but reports the scripted validation loss of its optimizer step (a forced rise after a
    minimum; by step, so a resumed run reports what the interrupted one would have)."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", SCRIPTED_VAL_LOSS[self.trainer.global_step])


class RowsWithValidation(Rows):
    def val_dataloader(self):
        return loader(self.tokenizer, self.batch_size, self.trainer.world_size, self.trainer.global_rank)


class Probe(L.Callback):
    """Each rank's own part of the trainable weights at every validation check; a checkpoint after check
    ``SAVE_STEP``."""

    def __init__(self, checkpoint: Path | None = None) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.checkpoint = checkpoint

    def on_validation_end(self, trainer, pl_module) -> None:
        reshard(pl_module)  # FSDP2 keeps the root's weights gathered after a forward
        params = pl_module.named_parameters()
        self.weights[trainer.global_step] = {n: local_part(p).detach().clone() for n, p in params if p.requires_grad}
        if self.checkpoint and trainer.global_step == SAVE_STEP:
            trainer.save_checkpoint(self.checkpoint)


def full_weights(module: L.LightningModule) -> dict[str, torch.Tensor]:
    """The whole trainable weights (gathered from every rank: a collective)."""
    params = module.named_parameters()
    return {
        n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for n, p in params if p.requires_grad
    }


def run(out: Path, strategy, devices: int, tokenizer, resume_from: Path | None = None) -> dict:
    """Fit the tiny model for ``STEPS`` steps with the three callbacks (or, with ``resume_from``, finish a run
    from its checkpoint); the callbacks' summaries and checks of the weights it ends with."""
    module = ScriptedValLoss(
        model=partial(tiny_llama, tokenizer, seed=0),
        optimizer=partial(torch.optim.AdamW, lr=3e-3, betas=(0.9, 0.95)),
    )
    # 5 questions in 3 batches (a small token budget) and 1 passage: odd counts, so the ranks are dealt different
    # numbers of batches
    forgetting = ForgettingCheck(
        mcq_file=str(REPO / "data/general/mcq.jsonl"),
        prose_file=str(REPO / "data/general/prose.jsonl"),
        max_questions=5,
        max_passages=1,
        max_batch_tokens=64,
        max_acc_drop=None,
    )
    samples = GenerationSamples(prompts=PROMPTS, max_new_tokens=4, output_dir=str(out))
    # checked after each validation (by default Lightning checks at epoch ends when validation runs once an epoch)
    stopper = EarlyStoppingWithRestore(monitor="val/loss", mode="min", patience=10, check_on_train_epoch_end=False)
    probe = Probe(None if resume_from else out / "step4.ckpt")
    trainer = tiny_trainer(
        devices=devices,
        strategy=strategy,
        max_steps=STEPS,
        val_check_interval=VAL_EVERY,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
        callbacks=[forgetting, samples, stopper, probe],
        default_root_dir=out,
    )
    data = RowsWithValidation(tokenizer, PER_RANK_BATCH * WORLD // devices)
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    reshard(module)
    final = {n: local_part(p).detach() for n, p in module.named_parameters() if p.requires_grad}
    result = {
        **forgetting.summary(),
        **stopper.summary(),
        "samples": samples.samples,
        "checks": sorted(probe.weights),
    }
    if BEST_STEP in probe.weights:  # each rank: its part of the weights equals its part at the best check
        best = probe.weights[BEST_STEP]
        result["restored_is_best"] = all(torch.equal(final[n], best[n]) for n in best)
        result["restored_is_best"] = trainer.strategy.reduce_boolean_decision(result["restored_is_best"], all=True)
    # Answers that end at different lengths on different ranks (here: a longer cap on rank 1) still run the same
    # forwards on every rank.
    samples.max_new_tokens = 4 + 4 * trainer.global_rank
    result["uneven_answers"] = samples.generate(module, tokenizer, synced=devices > 1)
    weights = full_weights(module)
    if trainer.is_global_zero:
        torch.save(weights, out / ("resumed.pt" if resume_from else "final.pt"))
    return result


def main(out: Path) -> None:
    torch.set_num_threads(1)  # two ranks on a shared 2-core machine: more threads only spin against each other
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    results = {"fsdp": run(out, FSDP2Strategy(timeout=TIMEOUT), WORLD, tokenizer)}
    # a fresh module and callbacks resume from the sharded checkpoint of step 4, train to step 6 and restore the
    # best weights (step 4's), which they know only from the checkpoint
    results["resumed"] = run(out, FSDP2Strategy(timeout=TIMEOUT), WORLD, tokenizer, out / "step4.ckpt")
    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Training on two CPU processes (gloo): DDP and FSDP2, full and LoRA, sharded checkpoints, export, the pipeline.

Run by tests/test_distributed.py as ``python tests/support/distributed_runs.py OUT_DIR``; Lightning's launcher starts
rank 1 by re-running this script, and both ranks run every scenario below in the same process group (one
process start-up for all of them). Rank 0 writes what the tests compare to ``OUT_DIR/results.json``.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_ft.data import Collator, PreferenceDataModule  # noqa: E402
from lit_ft.models import LoRA, load_tokenizer, tiny_llama  # noqa: E402
from lit_ft.modules import DPOModule, SFTModule  # noqa: E402
from lit_ft.strategies import DDPStrategy, FSDP2Strategy  # noqa: E402
from tests.support.helpers import compose_config, tiny_trainer  # noqa: E402

STEPS, PER_RANK_BATCH, WORLD = 6, 2, 2  # 16 rows: 4 global batches of 4 per epoch


def examples(distinct: int = 4, repeats: int = 4) -> list[dict]:
    """Rows of different lengths and loss-token counts (so token weighting across ranks matters), repeated so
    that every global batch holds the same rows: a resumed run then replays the same batches whatever data
    position Lightning resumes at (exact mid-epoch data resume is tested in test_resume.py)."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for i in range(distinct):
        length = 6 + 4 * i
        ids = torch.randint(5, 2000, (length,), generator=generator).tolist()
        prompt = 1 + distinct - i
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "task_ids": [i % 2] * length})
    return rows * repeats


def loader(tokenizer, batch_size: int, world_size: int = 1, rank: int = 0) -> DataLoader:
    """Rank ``rank`` gets rows rank, rank + world_size, ... in order, so the ranks' batches together are exactly
    the one-process batch of ``world_size * batch_size`` rows."""
    rows = examples()
    sampler = DistributedSampler(rows, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(rows, batch_size=batch_size, sampler=sampler, collate_fn=Collator(tokenizer.pad_token_id))


class Rows(L.LightningDataModule):
    """:func:`loader` for the rank this process turns out to be (Lightning's own sampler would shuffle)."""

    def __init__(self, tokenizer, batch_size: int) -> None:
        super().__init__()
        self.tokenizer, self.batch_size = tokenizer, batch_size

    def train_dataloader(self) -> DataLoader:
        return loader(self.tokenizer, self.batch_size, self.trainer.world_size, self.trainer.global_rank)


def make_module(tokenizer, lora: bool) -> SFTModule:
    return SFTModule(
        model=partial(tiny_llama, tokenizer, seed=0),
        adapter=LoRA(r=4, alpha=8, dropout=0.0) if lora else None,
        optimizer=partial(torch.optim.AdamW, lr=1e-2 if lora else 3e-3, betas=(0.9, 0.95)),
    )


class LossRecorder(L.Callback):
    """``train/loss`` (the window's token mean over all ranks) after each optimizer step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(trainer.callback_metrics["train/loss"].item())


class StopAtEpochEnd(L.Callback):
    """Stop after the first epoch: the checkpoint then resumes at a clean data position with the same schedule."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def fit(module, strategy, data, ckpt_path: str | None = None, callbacks=(), devices: int = WORLD) -> list[float]:
    """Train ``module`` for STEPS optimizer steps (or until a callback stops it); return its loss curve."""
    recorder = LossRecorder()
    trainer = tiny_trainer(
        devices=devices, strategy=strategy, max_steps=STEPS, gradient_clip_val=1.0, callbacks=[recorder, *callbacks]
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    module.fitted_trainer = trainer
    return recorder.losses


def dpo_module(tokenizer) -> DPOModule:
    """Full DPO with a frozen copy of the starting policy as reference: a module with two models to shard."""
    return DPOModule(
        model=partial(tiny_llama, tokenizer, seed=0),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        reference="copy",
    )


def pair_data(tokenizer, folder: Path, batch_size: int) -> PreferenceDataModule:
    """8 training pairs (each step takes all of them, so data order cannot matter) and 4 validation pairs."""
    from tests.conftest import write_jsonl
    from tests.test_preference_modules import toy_pairs

    folder.mkdir(parents=True, exist_ok=True)
    files = write_jsonl(folder / "train.jsonl", toy_pairs(8, 0)), write_jsonl(folder / "val.jsonl", toy_pairs(4, 1))
    return PreferenceDataModule(tokenizer, *files, batch_size=batch_size, eval_batch_size=batch_size // 2)


def dpo_run(module: DPOModule, strategy, data: PreferenceDataModule, devices: int = WORLD) -> dict[str, float]:
    """Validation loss before, then the validation metrics after 3 steps."""
    trainer = tiny_trainer(devices=devices, strategy=strategy, max_steps=3, gradient_clip_val=1.0)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val/loss"]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]
    return {"before": float(before), **{k: float(v) for k, v in after.items()}}


def write_chat_data(folder: Path) -> tuple[Path, Path]:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a + b}"},
            ]
        }
        for a in range(1, 5)
        for b in range(1, 5)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:12]), ("val", rows[12:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder / "train.jsonl", folder / "val.jsonl"


def main(out: Path) -> None:
    L.seed_everything(0)
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    data = Rows(tokenizer, PER_RANK_BATCH)
    probe = next(iter(loader(tokenizer, 4)))
    results: dict = {}
    for name, lora in (("full", False), ("lora", True)):
        results[f"ddp_{name}"] = fit(make_module(tokenizer, lora), DDPStrategy(), data)

        # FSDP2: one epoch, a sharded checkpoint, a fresh module resumed from it; then export (gathered to rank 0)
        first = make_module(tokenizer, lora)
        losses = fit(first, FSDP2Strategy(), data, callbacks=[StopAtEpochEnd()])
        checkpoint = out / f"fsdp_{name}.ckpt"
        first.fitted_trainer.save_checkpoint(checkpoint)
        resumed = make_module(tokenizer, lora)
        results[f"fsdp_{name}"] = losses + fit(resumed, FSDP2Strategy(), data, ckpt_path=str(checkpoint))
        resumed.eval()
        with torch.no_grad():
            logits = resumed(probe)  # every rank runs the forward: FSDP2 gathers each layer's weights
        results[f"fsdp_{name}_export"] = resumed.export(out / f"fsdp_{name}", tokenizer)
        if resumed.fitted_trainer.is_global_zero:
            torch.save(logits, out / f"fsdp_{name}_logits.pt")

    results["dpo"] = dpo_run(dpo_module(tokenizer), FSDP2Strategy(), pair_data(tokenizer, out / "pairs", 4))

    # The whole pipeline from the Hydra config (last: it closes the process group)
    from lit_ft.run import train

    train_file, val_file = write_chat_data(out / "chat")
    overrides = [
        "model=tiny",
        "strategy=fsdp",
        "trainer.devices=2",
        "trainer.max_steps=4",
        "trainer.max_epochs=2",
        "callbacks.progress_bar=null",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        "data=sft",
        "data.batch_size=2",
    ]
    results["pipeline"] = train(compose_config(overrides, output_dir=out / "pipeline"))

    if L.fabric.utilities.rank_zero.rank_zero_only.rank == 0:
        torch.save(probe, out / "probe.pt")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

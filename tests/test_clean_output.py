"""A run that succeeds prints no ERROR and no warning a user can do nothing about (tests/support/helpers.noise_lines),
so that the ones that do appear mean something. Run as users run it: ``python train.py``."""

from __future__ import annotations

from tests.support.helpers import noise_lines, run_entry_point


def test_noise_lines_finds_errors_and_warnings():
    output = "\n".join(
        [
            "[2026-01-01 00:00:00,000][hydra.utils][ERROR] - Error getting object at None",
            "/site-packages/lightning/pytorch/callbacks/model_checkpoint.py:588: `ModelCheckpoint(...)` could not find",
            "[2026-01-01 00:00:00,000][lit_ft.run][WARNING] - something",
            "[2026-01-01 00:00:00,000][lit_ft.run][INFO] - Seed set to 42",
            "│ val/loss           │   10.8059 │",
        ]
    )
    assert len(noise_lines(output)) == 3


def test_the_flagship_composition_runs_clean(tmp_path, arithmetic_files):
    train_file, val_file = arithmetic_files
    result = run_entry_point(
        [
            "experiment=lora_legal",  # its callbacks: per-task loss, early stopping, forgetting check, samples
            "model=tiny",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",  # a check inside fit (lora_legal validates at the epoch's end), for early stopping
            "callbacks.forgetting.max_questions=4",
            "callbacks.forgetting.max_passages=1",
            "callbacks.generation_samples.max_new_tokens=4",
            f"paths.log_dir={tmp_path}",
        ]
    )
    assert (tmp_path / "lora_legal" / "adapter" / "adapter_config.json").exists()
    assert noise_lines(result.stdout + result.stderr) == []


def test_uneven_validation_over_ranks_is_reported_with_its_count(tmp_path, tokenizer, caplog):
    from types import SimpleNamespace

    from lit_ft.data import SFTDataModule
    from tests.conftest import chat, write_jsonl

    rows = [chat(f"q{i}", f"a{i}", "t") for i in range(5)]
    dm = SFTDataModule(tokenizer, write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "v.jsonl", rows))
    dm.setup("fit")
    for world_size, message in ((1, None), (5, None), (2, "5 examples over 2 ranks, so 1 of them"), (4, "so 3 of")):
        caplog.clear()
        dm.trainer = SimpleNamespace(world_size=world_size)
        dm.val_dataloader()
        assert (message in caplog.text) if message else ("validation:" not in caplog.text), world_size

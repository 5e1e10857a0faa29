"""Data mixtures (proportions, per-source task types) and multi-stage curricula (stage transitions)."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from omegaconf import OmegaConf, open_dict

from lit_ft.data import IGNORE_INDEX, SFTDataModule
from lit_ft.data.mixing import mixture_counts, sample_mixture
from lit_ft.modules.schedules import warmup_decay_schedule
from lit_ft.run import train
from tests.conftest import chat, write_jsonl
from tests.support.helpers import compose_config
from tests.test_recipes import lr_trace


def test_mixture_draws_the_weighted_counts_and_cycles_each_source():
    groups = [[("a", i) for i in range(50)], [("b", i) for i in range(5)], [("c", i) for i in range(300)]]
    drawn = sample_mixture(groups, [0.7, 0.2, 0.1], total=10_000, seed=0)
    per_source = Counter(source for source, _ in drawn)
    assert per_source == {"a": 7000, "b": 2000, "c": 1000}
    per_item = Counter(drawn)
    assert {per_item[("a", i)] for i in range(50)} == {140}  # 7000 / 50: whole passes, nothing favoured
    assert {per_item[("b", i)] for i in range(5)} == {400}
    assert set(per_item[("c", i)] for i in range(300)) == {3, 4}  # 1000 / 300: 3 passes and a third
    assert [s for s, _ in drawn[:20]] != sorted(s for s, _ in drawn[:20])  # interleaved, not source by source
    assert mixture_counts([1, 1, 1], 10) == [4, 3, 3]  # ties: the first source gets the spare draw
    assert sum(mixture_counts([0.33, 0.33, 0.34], 7)) == 7
    with pytest.raises(ValueError, match="weights"):
        mixture_counts([0, 0], 5)


def test_mixture_datamodule_serves_the_proportions_with_per_source_task_types(tmp_path, tokenizer):
    domain = write_jsonl(
        tmp_path / "domain.jsonl", [chat(f"Clause {i}?", f"TYPE: t{i % 3}", "classify") for i in range(30)]
    )
    general = write_jsonl(tmp_path / "general.jsonl", [chat(f"Question {i}?", f"Answer {i}.") for i in range(6)])
    general_val = write_jsonl(tmp_path / "general_val.jsonl", [chat("Held out?", "Yes.")])
    data = SFTDataModule(
        tokenizer,
        mixture=[
            {"files": str(domain), "weight": 0.9},
            {"files": str(general), "weight": 0.1, "task_type": "general", "val_files": str(general_val)},
        ],
        train_samples=200,
        batch_size=10,
    )
    data.setup()
    assert data.task_names == ["classify", "general"]
    assert [data.task_names[e["task_ids"][0]] for e in data.val_examples] == ["general"]  # relabelled too
    seen = Counter()
    for _ in range(3):  # three epochs of the training loader
        for batch in data.train_dataloader():
            seen.update(data.task_names[int(row[0])] for row in batch["task_ids"])
    assert seen == {"classify": 540, "general": 60}  # 90% / 10% of 200 per epoch
    sources = data.stats["train"].sources
    assert sources["general"]["drawn"] == 20 and sources["general"]["examples"] == 6
    assert abs(sources["general"]["weight"] - 0.1) < 1e-12
    with pytest.raises(ValueError, match="either train_files or a mixture"):
        SFTDataModule(tokenizer, train_files=str(domain), mixture=[{"files": str(general)}])


def test_cpt_text_mixed_with_sft_chat_keeps_prompts_masked_when_packed(tmp_path, tokenizer):
    prose = write_jsonl(tmp_path / "prose.jsonl", [{"text": f"Clause {i} binds the parties."} for i in range(6)])
    chats = write_jsonl(tmp_path / "chat.jsonl", [chat(f"Classify clause {i}.", "TYPE: payment") for i in range(6)])
    data = SFTDataModule(
        tokenizer,
        mixture=[{"files": str(prose), "task_type": "prose"}, {"files": str(chats), "task_type": "chat"}],
        packing=True,
        max_length=256,
    )
    data.setup()
    segments = Counter()
    for pack in data.train_examples:  # split each pack at its position restarts
        starts = [i for i, p in enumerate(pack["position_ids"]) if p == 0] + [len(pack["input_ids"])]
        for start, end in zip(starts, starts[1:]):
            task = data.task_names[pack["task_ids"][start]]
            labels, ids = pack["labels"][start:end], pack["input_ids"][start:end]
            if task == "prose":  # continual pre-training: loss on every token but the first of the example,
                # which would be predicted from the previous example's last token (never a target in a packed row)
                assert labels[0] == IGNORE_INDEX and labels[1:] == ids[1:]
            else:  # SFT: the prompt carries no loss, the answer does
                assert labels[0] == IGNORE_INDEX and tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == (
                    "TYPE: payment<|im_end|>"
                )
            segments[task] += 1
    assert segments == {"prose": 6, "chat": 6} and len(data.train_examples) < 12  # packed together


def metric_rows(stage_dir, key):
    with (stage_dir / "csv" / "metrics.csv").open() as handle:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]


def test_curriculum_legal_runs_its_stages_in_order_handing_the_model_on(tmp_path):
    cfg = compose_config(
        [
            "experiment=curriculum_legal",
            "model=tiny",
            "logger=csv",
            "callbacks=none",
            "+trainer.enable_progress_bar=false",
            "+trainer.limit_val_batches=1",
            "data.batch_size=4",
            "data.eval_batch_size=4",
        ],
        output_dir=tmp_path,
    )
    # smaller stages: cpt 2 steps of 2 x 128 tokens, SFT 8 examples per epoch = 2 steps of 4
    with open_dict(cfg):
        OmegaConf.update(cfg.stages[0], "data", {"max_length": 128, "batch_size": 2, "eval_batch_size": 2})
        OmegaConf.update(cfg.stages[0], "trainer.limit_train_batches", 2)
        for stage in cfg.stages[1:]:
            OmegaConf.update(stage, "data.train_samples", 8)
    summary = train(cfg)

    names = [s["stage"] for s in summary["stages"]]
    assert names == ["cpt", "mixed_sft", "legal_sft"]
    stage_dirs = [tmp_path / "stages" / f"{i}-{name}" for i, name in enumerate(names, start=1)]
    stage_summaries = [json.loads((d / "summary.json").read_text()) for d in stage_dirs]

    # each stage trained on its own data ...
    tasks = [set(s["data"]["train"]["examples_per_task"]) for s in stage_summaries]
    assert tasks[0] == {"legal_prose"}
    cpt_data = stage_summaries[0]["data"]["train"]
    assert cpt_data["loss_tokens"] == cpt_data["tokens"]  # continual pre-training: loss on every token
    assert tasks[1] == {"classify", "flag", "revise", "summarize", "general"}
    assert tasks[2] == {"classify", "flag", "revise", "summarize"}
    assert stage_summaries[1]["data"]["train"]["sources"]["general"]["drawn"] == mixture_counts([0.8, 0.2], 8)[1]
    # ... for its own number of epochs (cpt: 1 epoch of packed prose; SFT: 2 epochs of 2 steps)
    assert [s["epochs"] for s in stage_summaries] == [1, 2, 2]
    assert [s["optimizer_steps"] for s in stage_summaries][1:] == [4, 4]
    # ... with its own LR schedule: cpt constant at 1e-3 after one warmup step, SFT stages cosine from their peak
    cpt_lrs = [lr for _, lr in metric_rows(stage_dirs[0], "lr")]
    assert cpt_lrs[0] == 0.0 and all(abs(lr - 1e-3) < 1e-9 for lr in cpt_lrs[1:])
    for stage_dir, peak in ((stage_dirs[1], 5e-4), (stage_dirs[2], 2e-4)):
        expected = lr_trace(
            lambda o, num_training_steps: warmup_decay_schedule(o, num_training_steps, 0.1, 0.1), 4, peak
        )
        assert [lr for _, lr in metric_rows(stage_dir, "lr")] == pytest.approx(expected[:4], rel=1e-6)
    # the model passes on: stage 3 starts exactly where stage 2 ended (same validation data, merged LoRA weights)
    assert stage_summaries[2]["val_loss_before"] == pytest.approx(stage_summaries[1]["val_loss_after"], abs=1e-5)
    assert stage_summaries[1]["val_loss_after"] < stage_summaries[1]["val_loss_before"]
    # only the last stage exports; the run summary points at it and totals the stages
    assert not (stage_dirs[0] / "model").exists() and (stage_dirs[2] / "adapter" / "adapter_config.json").is_file()
    assert summary["model_path"] == str(stage_dirs[2] / "model")
    assert summary["optimizer_steps"] == sum(s["optimizer_steps"] for s in stage_summaries)
    assert json.loads((tmp_path / "summary.json").read_text())["stages"][2]["stage"] == "legal_sft"

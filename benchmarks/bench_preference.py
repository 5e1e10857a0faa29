"""Side-by-side preference-training benchmark: lit-ft's DPO and reward model against TRL's ``DPOTrainer`` and
``RewardTrainer``, same model, pairs and machine.

    python benchmarks/bench_preference.py                  # DPO (each reference strategy) and reward model, LoRA and full
    python benchmarks/bench_preference.py --tasks dpo --modes lora --references precomputed adapter
    python benchmarks/bench_preference.py --steps 3 --warmup 1 --threads 1 --only matched --force  # a quick look

Every configuration runs in a fresh Python process (``--worker``) pinned to ``--threads`` cores, on the embedded
SmolLM2-135M-Instruct and the pairs of ``data/preference/train.jsonl``, tokenised once by lit-ft's
``PreferenceDataModule`` (chat template, loss labels on the answer) and put in one seeded order shared by both
tools: each optimizer step of lit-ft and TRL scores the same B pairs, as the same 2B token sequences.

- DPO (sigmoid loss, beta 0.1): TRL gets each pair as ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` cut
  where lit-ft's labels start, so its completion mask is lit-ft's loss mask. Each sequence ends at its last
  loss token (``<|im_end|>``): the newline the chat template adds after it carries no loss in lit-ft and would
  count in TRL's completion. The reference strategies: ``precomputed`` (lit-ft ``reference=precomputed``; TRL
  ``precompute_ref_log_probs=True``), ``adapter`` (LoRA only: the policy with its adapter disabled, in both),
  ``copy`` (lit-ft ``reference=copy``; TRL with ``ref_model`` set to a loaded copy for LoRA, and its own copy,
  ``ref_model=None``, for full fine-tuning). The precomputing pass over the pairs is timed apart (``ref pass s``).
- Reward model: both tools get the whole sequences (``chosen_ids`` / ``rejected_ids`` with each pair's margin,
  0 where the row has none) and the same score head (drawn from ``--seed``); LoRA adapts the decoder and trains
  the score head in full (peft's ``SEQ_CLS`` task type) in both.

It reports per configuration: pairs per second, non-padding tokens per second (wall and per CPU-second), the
mean step time, peak memory, MFU, and the loss, reward accuracy and margin of the first and last step (the same
batches: equal within noise when the math is equal). The table goes to its own section of
``benchmarks/RESULTS.md`` (``--out``); the raw results to ``benchmarks/RESULTS_preference.json``.
"""

from __future__ import annotations

import argparse
import json
import random
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    LORA,
    MODEL,
    REPO,
    Config,
    StepRecorder,
    Target,
    add_common_arguments,
    bf16_is_fast,
    counting_trainer,
    fmt,
    litft_optimization,
    litft_trainer,
    machine_line,
    mfu_percent,
    parameter_counts,
    ratio_cells,
    run_all,
    select,
    steps_line,
    target_lines,
    train_trl,
    trl_arguments,
    trl_timer,
    worker,
    write_table_section,
)

DATA = REPO / "data" / "preference" / "train.jsonl"
BETA = 0.1
REFERENCES = ("precomputed", "adapter", "copy")
# What each tool logs for the reward accuracy and margin of a step, under the names used here.
LITFT_METRICS = {"accuracy": "train/rewards/accuracies", "margin": "train/rewards/margins"}
TRL_METRICS = {
    "dpo": {"accuracy": "rewards/accuracies", "margin": "rewards/margins"},
    "reward": {"accuracy": "accuracy", "margin": "margin"},
}


# --- data and model ---------------------------------------------------------------------------------------------


def ending_at_last_loss_token(sequence: dict[str, list[int]]) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` cut after the last token that carries loss."""
    from lit_ft.data import IGNORE_INDEX

    last = max(i for i, label in enumerate(sequence["labels"]) if label != IGNORE_INDEX)
    return {key: values[: last + 1] for key, values in sequence.items()}


def preference_data(cfg: Config, tokenizer):
    """lit-ft's ``PreferenceDataModule`` over the benchmark's pairs: ``(warmup + steps) * batch_size`` training pairs
    in one seeded order (indexed 0..n-1, the key of precomputed reference log-probs), served in that order."""
    from lit_ft.data import PreferenceDataModule
    from lit_ft.data.preference_rows import SIDES

    class OrderedPairs(PreferenceDataModule):
        def train_dataloader(self):  # no sampler: the order shared with TRL
            return self._loader(self.train_examples, self.batch_size, collate_fn=self.train_collate_fn())

    datamodule = OrderedPairs(
        tokenizer,
        train_files=DATA,
        max_length=cfg.max_length,
        truncation="left",
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.batch_size,  # the precomputing pass, as TRL's precompute_ref_batch_size default
        seed=cfg.seed,
        padding_free=cfg.batching == "padding_free",
        shared_prompt=cfg.batching == "shared_prompt",
    )
    datamodule.setup("fit")
    pairs = datamodule.train_examples[:]
    random.Random(cfg.seed).shuffle(pairs)
    needed = (cfg.warmup + cfg.steps) * cfg.batch_size
    while len(pairs) < needed:
        pairs = pairs + pairs
    if cfg.task == "dpo":
        pairs = [{**pair, **{side: ending_at_last_loss_token(pair[side]) for side in SIDES}} for pair in pairs]
    datamodule.train_examples = [{**pair, "example_index": i} for i, pair in enumerate(pairs[:needed])]
    return datamodule


def trl_row(task: str, pair: dict[str, Any]) -> dict[str, Any]:
    """The pair in TRL's tokenised format: DPO ``prompt_ids``/``chosen_ids``/``rejected_ids`` (the completion is
    where lit-ft's labels are), reward model ``chosen_ids``/``rejected_ids``/``margin``."""
    from lit_ft.data import IGNORE_INDEX

    chosen, rejected = pair["chosen"], pair["rejected"]
    if task == "reward":
        return {
            "chosen_ids": chosen["input_ids"],
            "rejected_ids": rejected["input_ids"],
            "margin": pair["margin"] or 0.0,
        }
    start = next(i for i, label in enumerate(chosen["labels"]) if label != IGNORE_INDEX)
    for side in (chosen, rejected):
        if side["input_ids"][:start] != chosen["input_ids"][:start] or IGNORE_INDEX in side["labels"][start:]:
            raise ValueError("a pair whose answers do not both follow the same prompt with loss on every token")
    return {
        "prompt_ids": chosen["input_ids"][:start],
        "chosen_ids": chosen["input_ids"][start:],
        "rejected_ids": rejected["input_ids"][start:],
    }


def load(cfg: Config, head: str = "lm", gradient_checkpointing: bool = False):
    """The model both tools train (``transformers``' ``from_pretrained`` through lit-ft's ``load_model``). A new
    score head is drawn from ``cfg.seed`` alone, and drawing it leaves the global RNG as it was (``from_pretrained``
    initialises missing weights from it), so both tools also draw the same LoRA initialisation after it."""
    import torch

    from lit_ft.models import load_model

    with torch.random.fork_rng(devices=[]):
        model = load_model(
            MODEL, attn_implementation=cfg.attn, gradient_checkpointing=gradient_checkpointing, head=head
        )
    if head == "score":
        with torch.no_grad():
            generator = torch.Generator().manual_seed(cfg.seed)
            model.score.weight.normal_(0.0, model.config.initializer_range, generator=generator)
    return model


# --- lit-ft -----------------------------------------------------------------------------------------------------


def run_litft(cfg: Config) -> dict[str, Any]:
    import lightning as L

    from lit_ft.models import LoRA, load_tokenizer
    from lit_ft.modules import DPOModule, RewardModelModule

    L.seed_everything(cfg.seed, verbose=False)
    datamodule = preference_data(cfg, load_tokenizer(MODEL))
    recorder = StepRecorder(cfg)

    class TimedDPOModule(DPOModule):
        def precompute_reference_logps(self) -> None:
            with recorder.phase("ref_pass"):
                super().precompute_reference_logps()

    arguments = {
        "model": partial(load, cfg, gradient_checkpointing=cfg.gradient_checkpointing),
        "adapter": LoRA(**LORA, dropout=cfg.lora_dropout, addmm=cfg.lora_addmm) if cfg.mode == "lora" else None,
        **litft_optimization(cfg),
    }
    if cfg.task == "dpo":  # a reward model has no LM head to restrict to loss tokens
        module_class = TimedDPOModule if cfg.reference == "precomputed" else DPOModule
        module = module_class(
            beta=BETA, reference=cfg.reference, head_on_loss_tokens=cfg.head_on_loss_tokens, **arguments
        )
    else:
        module = RewardModelModule(**arguments)
    litft_trainer(cfg, recorder, LITFT_METRICS).fit(module, datamodule=datamodule)
    return recorder.summary(cfg, *parameter_counts(module.model))  # the policy (not a frozen reference copy)


# --- TRL --------------------------------------------------------------------------------------------------------


def run_trl(cfg: Config) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from lit_ft.models import load_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(MODEL)
    pairs = preference_data(cfg, tokenizer).train_examples
    dataset = Dataset.from_list([trl_row(cfg.task, pair) for pair in pairs])
    recorder = StepRecorder(cfg)
    peft_config = None
    if cfg.mode == "lora":
        peft_config = LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear",
            task_type="SEQ_CLS" if cfg.task == "reward" else "CAUSAL_LM",
        )
    arguments = {**trl_arguments(cfg), "max_length": cfg.max_length}
    callbacks = [trl_timer(recorder, TRL_METRICS[cfg.task])]

    if cfg.task == "reward":
        args = RewardConfig(**arguments)
        trainer = counting_trainer(RewardTrainer, recorder)(
            model=load(cfg, head="score"),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:

        class BenchDPOTrainer(counting_trainer(DPOTrainer, recorder)):
            def _prepare_dataset(self, dataset, *args, **kwargs):
                return dataset  # already tokenised by lit-ft: prompt_ids, chosen_ids, rejected_ids

            def _precompute_ref_logps(self, *args, **kwargs):
                with recorder.phase("ref_pass"):
                    return super()._precompute_ref_logps(*args, **kwargs)

        args = DPOConfig(**arguments, beta=BETA, precompute_ref_log_probs=cfg.reference == "precomputed")
        # LoRA with a copy as reference needs it given; full fine-tuning without one makes TRL load its own copy.
        ref_model = load(cfg) if cfg.reference == "copy" and cfg.mode == "lora" else None
        trainer = BenchDPOTrainer(
            model=load(cfg),
            ref_model=ref_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    return train_trl(trainer, cfg, recorder)


def run(cfg: Config) -> dict[str, Any]:
    return run_litft(cfg) if cfg.tool == "lit-ft" else run_trl(cfg)


# --- configurations ---------------------------------------------------------------------------------------------


LAYOUTS = {  # lit-ft's candidate layouts of a training batch beside the padded one (the matched row)
    "padding_free": "padding-free pairs, sdpa_varlen",
    "shared_prompt": "shared prompts, sdpa_varlen",
}


def comparison_configs(
    tasks: list[str], modes: list[str], references: list[str], steps: int, warmup: int, threads: int
) -> list[Config]:
    """Matched settings, lit-ft's candidate layouts, and each tool's recommended defaults, for each task, mode and
    (DPO) reference strategy.

    Matched: fp32, padded batches, no gradient checkpointing, dropout off (TRL's preference trainers switch it
    off by default; lit-ft's LoRA gets ``dropout=0``), the same reference strategy. Layouts: lit-ft as matched but
    with padding-free pair batches (``data.padding_free=true``) or shared prompts (``data.shared_prompt=true``),
    both with ``sdpa_varlen``: the candidate defaults these rows decide, compared with TRL's matched row. Defaults:
    lit-ft's shipped ``module=dpo`` / ``module=reward`` with ``peft=lora`` (precomputed reference, LoRA dropout
    0.05); TRL's ``DPOConfig()`` / ``RewardConfig()`` (gradient checkpointing, no dropout, bf16 off where it is
    slow; see ``trl_arguments``), whose DPO reference is the policy with its adapter disabled (LoRA) or a loaded
    copy (full).
    """
    base = {"steps": steps, "warmup": warmup, "threads": threads}
    trl_label = ("DPOConfig()", "RewardConfig()")
    bf16_note = "" if bf16_is_fast() else " with bf16=False"
    configs = []
    for task in tasks:
        for mode in modes:
            run = {"task": task, "mode": mode, **base}
            strategies = [r for r in references if mode == "lora" or r != "adapter"] if task == "dpo" else [None]
            for reference in strategies:
                matched = {"reference": reference, "lora_dropout": 0.0, **run}
                configs += [
                    Config(tool, setting="matched", label="fp32 padded", **matched) for tool in ("trl", "lit-ft")
                ]
                configs += [
                    Config("lit-ft", setting="layouts", label=label, batching=batching, attn="sdpa_varlen", **matched)
                    for batching, label in LAYOUTS.items()
                ]
            trl_reference = ("adapter" if mode == "lora" else "copy") if task == "dpo" else None
            label = trl_label[task == "reward"] + bf16_note
            configs.append(
                Config("trl", setting="defaults", label=label, reference=trl_reference, trl_defaults=True, **run)
            )
            litft_reference = "precomputed" if task == "dpo" else None
            label = f"module={task}" + (", peft=lora" if mode == "lora" else "")
            configs.append(Config("lit-ft", setting="defaults", label=label, reference=litft_reference, **run))
    return configs


def preference_target(name: str, task: str, reference: str | None, speed: float, memory: float) -> Target:
    """lit-ft's LoRA rows of ``task`` and ``reference`` (padded, each layout) against TRL's matched row."""
    key = lambda c: (c.task, c.mode, c.reference) == (task, "lora", reference)  # noqa: E731
    return Target(
        name,
        speed,
        memory,
        litft=lambda c: c.tool == "lit-ft" and c.setting in ("matched", "layouts") and key(c),
        trl=lambda c: c.tool == "trl" and c.setting == "matched" and key(c),
    )


TARGETS = [
    preference_target("DPO, LoRA, precomputed reference", "dpo", "precomputed", 2.0, 0.7),
    preference_target("DPO, LoRA, adapter-disabled reference", "dpo", "adapter", 1.8, 0.8),
    preference_target("reward model, LoRA", "reward", None, 1.5, 0.85),
]


# --- report -----------------------------------------------------------------------------------------------------


def reference_row(results: list[tuple[Config, dict]], cfg: Config) -> dict | None:
    """The TRL row a lit-ft row is compared with: same setting (matched for the layouts), task and mode (and
    reference, when matched)."""
    if cfg.tool != "lit-ft":
        return None
    setting = "matched" if cfg.setting == "layouts" else cfg.setting
    for c, r in results:
        same = c.setting == setting and c.task == cfg.task and c.mode == cfg.mode
        if same and c.tool == "trl" and (setting != "matched" or c.reference == cfg.reference) and "error" not in r:
            return r
    return None


def write_report(results: list[tuple[Config, dict]], peaks: dict[str, float], started_load: str, out: Path) -> str:
    """Write the preference section of ``out`` (the other benchmarks' sections stay) and return it."""
    lines = [
        "# lit-ft vs TRL: preference training (DPO, reward model)",
        "",
        "Written by `python benchmarks/bench_preference.py` (see docs/performance.md for how to read it).",
        "",
        f"- Machine: {machine_line(peaks)}; load average at the start: {started_load}.",
        "- Model: SmolLM2-135M-Instruct (embedded); data: `data/preference/train.jsonl` tokenised by lit-ft's "
        "`PreferenceDataModule`, one fixed order of pairs for both tools; DPO sigmoid loss, beta 0.1 (DPO sequences "
        "end at `<|im_end|>`, so both tools' completions are the loss-carrying tokens); reward model: Bradley-Terry "
        "with the rows' margins, the same seeded score head; fused AdamW, constant LR (2e-5 full, 2e-4 LoRA r=16 "
        "alpha=32 all-linear), gradient clipping 1.0.",
        "- pairs/s and tokens/s (non-padding tokens of chosen and rejected sequences) per second of wall time on an "
        "otherwise idle machine (the headline; the first speed ratio); tokens/CPU-s per second of CPU time of the "
        "benchmark's threads (secondary). ref pass s: the pass "
        "of reference log-probs over the run's pairs before training (precomputed reference only; not in the step "
        "times). Memory: the whole process' peak resident set from its start to the end of the run (loading and the "
        "reference pass included), the ratios' memory; train peak: during the training steps only. MFU = F·N·tokens/CPU-s / matmul peak, "
        "N: base-model parameters, F = 6 for full fine-tuning (forward, input and weight gradients), 4 for LoRA (the "
        "frozen base gets no weight gradients), +2 with a reference forward on the fly (adapter, copy). acc, margin: reward accuracy and mean margin of the last step's pairs.",
        "",
    ]
    titles = {
        "matched": "Matched settings (fp32, padded batches of 4 pairs, max length 256, no gradient checkpointing, "
        "dropout off)",
        "layouts": "lit-ft's candidate layouts (as matched, one change each; ratios against TRL's matched row)",
        "defaults": "Each tool's recommended defaults (batch 4 pairs, max length 256)",
    }
    if any(c.setting in ("matched", "layouts") for c, _ in results):
        lines += target_lines(TARGETS, results)
    for setting, title in titles.items():
        rows = [(c, r) for c, r in results if c.setting == setting]
        if not rows:
            continue
        lines += [f"## {title}", "", steps_line(rows), ""]
        lines += [
            "| task | mode | reference | tool | settings | pairs/s | tokens/s | tokens/CPU-s | step s | ref pass s | "
            "peak MB | train peak MB | MFU % | loss step 1 | loss last | acc last | margin last | speed (wall) | speed (CPU time) | "
            "memory |",
            "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cfg, r in rows:
            head = f"| {cfg.task} | {cfg.mode} | {cfg.reference or '-'} | {cfg.tool} | {cfg.label}"
            if "error" in r:
                lines.append(f"{head} | failed: {' '.join(r['error'])[:120]} |")
                continue
            flops = (4.0 if cfg.mode == "lora" else 6.0) + (2.0 if cfg.reference in ("adapter", "copy") else 0.0)
            last = r.get("metrics_last", {})
            cells = [
                fmt(cfg.batch_size / r["step_s"], 3),
                fmt(r["tokens_per_s"]),
                fmt(r["tokens_per_cpu_s"]),
                fmt(r["step_s"], 2),
                fmt(r.get("ref_pass_s"), 1),
                fmt(r["peak_mem_mb"], 0),
                fmt(r.get("train_peak_mb"), 0),
                fmt(mfu_percent(cfg, r, peaks, flops), 1),
                fmt(r["loss_first"], 4),
                fmt(r["loss_last"], 4),
                fmt(last.get("accuracy"), 2),
                fmt(last.get("margin"), 4),
                *ratio_cells(r, reference_row(results, cfg)),
            ]
            lines.append(f"{head} | " + " | ".join(cells) + " |")
        lines.append("")
    return write_table_section(out, "bench_preference", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--tasks", nargs="+", default=["dpo", "reward"], choices=["dpo", "reward"])
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--references", nargs="+", default=list(REFERENCES), choices=REFERENCES)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "RESULTS_preference.json")
    args = parser.parse_args()

    if args.worker:
        worker(Config(**json.loads(args.worker)), run)
        return

    configs = comparison_configs(args.tasks, args.modes, args.references, args.steps, args.warmup, args.threads)
    report = partial(write_report, out=args.out)
    run_all(select(configs, args.only), Path(__file__), args.json, report, args)


if __name__ == "__main__":
    main()

"""Side-by-side online-RL benchmark: lit-ft's ``RLModule`` (GRPO) against TRL's ``GRPOTrainer``, same model,
prompts, group size, completion length and machine.

    python benchmarks/bench_rl.py                       # LoRA, matched settings, both tools, best of 2
    python benchmarks/bench_rl.py --steps 3 --warmup 1 --repeats 1 --force   # a quick look

Every configuration runs in a fresh Python process (``--worker``) pinned to ``--threads`` cores, on the embedded
SmolLM2-135M-Instruct and the classify and flag prompts of ``data/legal/train.jsonl`` (the prompts of
``experiment=rl_legal``), tokenised once by lit-ft's ``SFTDataModule`` and served to both tools in the same order.
Each optimizer step samples ``--group-size`` completions of each of ``--batch-size`` prompts and trains on them once.

What is held equal:
- the prompts: TRL gets each row's messages before its last answer, and renders them with the same chat template
  (``add_generation_prompt``); the worker checks that its prompt tokens are lit-ft's;
- the completion length: every completion is exactly ``--completion-length`` tokens (end-of-turn suppressed by
  ``min_new_tokens`` in both tools' generation config), so both generate and train on the same number of tokens;
- the reward: one Python function of the completion's tokens (the fraction of distinct tokens), so that rewards vary
  within a group and the policy gradient is not zero;
- the objective: group mean/std advantages (GRPO; TRL ``scale_rewards="group"``), the clipped surrogate with one
  pass per batch of rollouts, beta 0.04 times the k3 KL to the reference (the policy with its LoRA adapter
  disabled, in both), the loss averaged over all completion tokens of the step (lit-ft's normalisation; TRL's
  ``loss_type="dapo"``);
- sampling at temperature 1, top-p 1, KV cache on; fp32; no gradient checkpointing; LoRA r=16 alpha=32 all-linear,
  dropout 0; fused AdamW at a constant LR of 1e-5; gradient clipping 1.0.

lit-ft runs twice: on padded rollouts (``sdpa``, each completion a row ``prompt + completion``, TRL's layout) and
with its default for grpo/rloo, shared-prompt rollouts (``sdpa_varlen``: each prompt runs once per group, its
completions branching off it; the same log-probs). Both sample as lit-ft always does: each prompt's KV cache computed
once and repeated for its group (``lit_ft.models.group_generation``; TRL's ``generate`` runs each prompt G times),
the same tokens as generating from the repeated prompts. Train tokens count each completion with its prompt in every
row, whatever the layout runs, so the rates compare the same work.

It reports per configuration: the mean optimizer-step time (sampling, scoring and training), rollout tokens per
second of generation (completion tokens over the time spent in ``generate``), train tokens per second (prompt and
completion tokens of the rollouts over the time outside generation), the peak memory of the whole process, and the
first and last step's loss and mean reward. The table goes to its own section of ``benchmarks/RESULTS.md``
(``--out``); the raw results to ``benchmarks/RESULTS_rl.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    LORA,
    REPO,
    Config,
    StepRecorder,
    add_common_arguments,
    fmt,
    litft_optimization,
    litft_trainer,
    machine_line,
    parameter_counts,
    run_all,
    select,
    steps_line,
    train_trl,
    trl_arguments,
    trl_timer,
    worker,
    write_table_section,
)

DATA = REPO / "data" / "legal" / "train.jsonl"
TASK_TYPES = ["classify", "flag"]
BETA = 0.04
LR = 1e-5
# What each tool logs for the mean reward and KL of a step, under the names used here.
LITFT_METRICS = {"reward": "train/reward", "kl": "train/kl"}
TRL_METRICS = {"reward": "reward", "kl": "kl"}


def distinct_token_reward(completion_ids: list[list[int]]) -> list[float]:
    """The benchmark's reward, the same for both tools: the fraction of distinct tokens in each completion."""
    return [len(set(ids)) / max(len(ids), 1) for ids in completion_ids]


def prompt_data(cfg: Config, tokenizer):
    """lit-ft's ``SFTDataModule`` over the classify and flag rows, padded, in one seeded order:
    ``(warmup + steps) * batch_size`` rows, served in that order."""
    import random

    from lit_ft.data import SFTDataModule

    class Ordered(SFTDataModule):
        def train_dataloader(self):  # no sampler: the order shared with TRL
            return self._loader(self.train_examples, self.batch_size, collate_fn=self.train_collate_fn())

    datamodule = Ordered(
        tokenizer,
        train_files={"path": DATA, "task_types": TASK_TYPES},
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    datamodule.setup("fit")
    rows = list(datamodule.train_examples)
    random.Random(cfg.seed).shuffle(rows)
    needed = (cfg.warmup + cfg.steps) * cfg.batch_size
    while len(rows) < needed:
        rows = rows + rows
    datamodule.train_examples = rows[:needed]
    return datamodule


def fixed_length(model, length: int) -> None:
    """Make every sampled completion exactly ``length`` tokens (end-of-turn suppressed before that)."""
    model.generation_config.min_new_tokens = length


def record_rollout(recorder: StepRecorder, seconds: float, generated: int, tokens: int) -> None:
    """One step's generation: its wall seconds and completion tokens (per step, so the measured steps can be told
    from the warm-up), and its rollouts' prompt and completion tokens as the step's tokens."""
    recorder.metrics["rollout_s"].append(seconds)
    recorder.metrics["rollout_tokens"].append(generated)
    recorder.count(tokens)


# --- lit-ft -----------------------------------------------------------------------------------------------------


def run_litft(cfg: Config) -> dict[str, Any]:
    import lightning as L
    import torch

    from lit_ft.models import LoRA, load_model, load_tokenizer
    from lit_ft.modules import RLModule

    L.seed_everything(cfg.seed, verbose=False)
    datamodule = prompt_data(cfg, load_tokenizer(cfg.model))
    recorder = StepRecorder(cfg)
    length, group = cfg.extra["completion_length"], cfg.extra["group_size"]

    def reward(rollouts) -> torch.Tensor:
        return torch.tensor(distinct_token_reward(rollouts.completion_ids))

    class TimedRL(RLModule):
        def sample(self, prompts, count, temperature):
            fixed_length(self.model, length)
            started = time.perf_counter()
            completions, truncated = super().sample(prompts, count, temperature)
            generated = sum(map(len, completions))
            record_rollout(
                recorder, time.perf_counter() - started, generated, generated + count * sum(map(len, prompts))
            )
            return completions, truncated

    module = TimedRL(
        model=partial(load_model, cfg.model, attn_implementation=cfg.attn),
        adapter=LoRA(**LORA, dropout=cfg.lora_dropout, addmm=cfg.lora_addmm),
        reward=reward,
        group_size=group,
        max_new_tokens=length,
        beta=BETA,
        **litft_optimization(cfg),
    )
    litft_trainer(cfg, recorder, LITFT_METRICS, count_tokens=False).fit(module, datamodule=datamodule)
    return recorder.summary(cfg, *parameter_counts(module.model))


# --- TRL --------------------------------------------------------------------------------------------------------


def trl_prompts(datamodule) -> list[list[dict[str, str]]]:
    """Each row's conversation before its last answer (TRL's conversational ``prompt``), in the benchmark's order."""
    import torch

    from lit_ft.data.readers import read_records
    from lit_ft.modules.rl import last_answer_spans

    chats = [r.row["messages"] for r in read_records(DATA) if r.row.get("task_type") in TASK_TYPES]
    by_prompt = {}
    tokenizer = datamodule.tokenizer
    for messages in chats:
        rendered = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=True)
        by_prompt[tuple(rendered["input_ids"])] = messages[:-1]
    prompts = []
    for example in datamodule.train_examples:
        [(start, _)] = last_answer_spans(torch.tensor([example["labels"]]))  # what lit-ft samples after
        key = tuple(example["input_ids"][:start])
        if key not in by_prompt:
            raise ValueError("a lit-ft prompt that TRL's chat-template rendering does not reproduce")
        prompts.append(by_prompt[key])
    return prompts


def run_trl(cfg: Config) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from lit_ft.models import load_model, load_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    length, group = cfg.extra["completion_length"], cfg.extra["group_size"]
    dataset = Dataset.from_list([{"prompt": p} for p in trl_prompts(prompt_data(cfg, tokenizer))])
    recorder = StepRecorder(cfg)

    def reward(completion_ids, **kwargs) -> list[float]:
        return distinct_token_reward(completion_ids)

    class TimedGRPO(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            started = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            generated = sum(map(len, completion_ids))
            record_rollout(recorder, time.perf_counter() - started, generated, generated + sum(map(len, prompt_ids)))
            return completion_ids, logprobs

    arguments = trl_arguments(cfg)
    arguments["per_device_train_batch_size"] = cfg.batch_size * group  # TRL counts completions, not prompts
    args = GRPOConfig(
        **arguments,
        num_generations=group,
        max_completion_length=length,
        generation_kwargs={"min_new_tokens": length},
        beta=BETA,
        loss_type="dapo",
        scale_rewards="group",
        shuffle_dataset=False,
        disable_dropout=True,
    )
    trainer = TimedGRPO(
        model=load_model(cfg.model, attn_implementation=cfg.attn),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=cfg.lora_dropout, target_modules="all-linear"
        ),
        callbacks=[trl_timer(recorder, TRL_METRICS)],
    )
    return train_trl(trainer, cfg, recorder)


def run(cfg: Config) -> dict[str, Any]:
    return run_litft(cfg) if cfg.tool == "lit-ft" else run_trl(cfg)


# --- configurations and report ----------------------------------------------------------------------------------


def comparison_configs(args: argparse.Namespace) -> list[Config]:
    """LoRA, matched settings (see the module docstring): TRL; lit-ft on padded rollouts (``sdpa``: the same layout
    as TRL's); lit-ft's default, shared-prompt rollouts (``sdpa_varlen``: each prompt runs once per group)."""
    run = {
        "mode": "lora",
        "setting": "matched",
        "task": "rl",
        "lr": LR,
        "lora_dropout": 0.0,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "extra": {"completion_length": args.completion_length, "group_size": args.group_size},
    }
    return [
        Config("trl", label="GRPOTrainer, padded", **run),
        Config("lit-ft", label="padded rollouts", **run),
        Config("lit-ft", label="shared-prompt rollouts (default)", attn="sdpa_varlen", **run),
    ]


def rates(cfg: Config, r: dict[str, Any]) -> dict[str, float]:
    """Rollout tokens/s (completion tokens over generation time) and train tokens/s (rollout tokens over the rest of
    the step) of the measured steps."""
    measured = slice(cfg.warmup, cfg.warmup + cfg.steps)
    generated = sum(r["metrics"]["rollout_tokens"][measured])
    rollout_s = sum(r["metrics"]["rollout_s"][measured])
    train_s = r["step_s"] * cfg.steps - rollout_s
    return {
        "rollout_tokens_per_s": generated / rollout_s,
        "train_tokens_per_s": r["tokens_per_step"] * cfg.steps / train_s,
        "rollout_share": rollout_s / (r["step_s"] * cfg.steps),
    }


def write_report(results: list[tuple[Config, dict]], peaks: dict[str, float], started_load: str, out: Path) -> str:
    """Write the RL section of ``out`` (the other benchmarks' sections stay) and return it."""
    cfg0 = results[0][0]
    lines = [
        "# lit-ft vs TRL: online RL (GRPO)",
        "",
        "Written by `python benchmarks/bench_rl.py` (see its docstring for what is held equal).",
        "",
        f"- Machine: {machine_line(peaks)}; load average at the start: {started_load}.",
        f"- Model: SmolLM2-135M-Instruct (embedded), LoRA r=16 alpha=32 all-linear; prompts: the classify and flag "
        f"rows of `data/legal/train.jsonl`, {cfg0.batch_size} per step, {cfg0.extra['group_size']} completions "
        f"each, every completion exactly {cfg0.extra['completion_length']} tokens; GRPO advantages, beta 0.04 (the "
        "adapter-disabled reference), one pass per batch of rollouts, loss averaged over completion tokens; fp32, "
        "no gradient checkpointing.",
        "- step s: mean wall time of an optimizer step (sampling, reward, reference and policy passes, update); "
        "rollout tokens/s: completion tokens per second of generation; train tokens/s: prompt and completion tokens "
        "per second of the rest of the step. Memory: the process's peak resident set from start to end.",
        "",
        steps_line(results),
        "",
        "| tool | settings | step s | rollout tokens/s | train tokens/s | rollout share | peak MB | loss step 1 | "
        "reward step 1 | reward last | speed (step) | rollout speed | memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    trl = next((r for c, r in results if c.tool == "trl" and "error" not in r), None)
    for cfg, r in results:
        head = f"| {cfg.tool} | {cfg.label}"
        if "error" in r:
            lines.append(f"{head} | failed: {' '.join(r['error'])[:120]} |")
            continue
        own = rates(cfg, r)
        first, last = r.get("metrics_first", {}), r.get("metrics_last", {})
        ratios = ["-", "-", "-"]
        if cfg.tool == "lit-ft" and trl:
            theirs = rates(next(c for c, x in results if x is trl), trl)
            ratios = [
                f"{trl['step_s'] / r['step_s']:.2f}x",
                f"{own['rollout_tokens_per_s'] / theirs['rollout_tokens_per_s']:.2f}x",
                f"{r['peak_mem_mb'] / trl['peak_mem_mb']:.2f}x",
            ]
        cells = [
            fmt(r["step_s"], 2),
            fmt(own["rollout_tokens_per_s"]),
            fmt(own["train_tokens_per_s"]),
            f"{own['rollout_share']:.0%}",
            fmt(r["peak_mem_mb"], 0),
            fmt(r["loss_first"], 4),
            fmt(first.get("reward"), 3),
            fmt(last.get("reward"), 3),
            *ratios,
        ]
        lines.append(f"{head} | " + " | ".join(cells) + " |")
    lines.append("")
    return write_table_section(out, "bench_rl", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per optimizer step")
    parser.add_argument("--group-size", type=int, default=4, help="completions per prompt")
    parser.add_argument("--completion-length", type=int, default=32, help="tokens of every completion")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "RESULTS_rl.json")
    args = parser.parse_args()

    if args.worker:
        worker(Config(**json.loads(args.worker)), run)
        return

    report = partial(write_report, out=args.out)
    run_all(select(comparison_configs(args), args.only), Path(__file__), args.json, report, args)


if __name__ == "__main__":
    main()

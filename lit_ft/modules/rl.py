"""Online RL of a causal LM (RLHF stage 3): sample groups of completions, score them, push the policy toward the
better ones with group-relative advantages (RLOO or GRPO) and a KL penalty toward the model it started from."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.losses import clipped_policy_loss, grpo_advantages, kl_k3, rloo_advantages
from lit_ft.modules.causal_lm import CausalLMModule
from lit_ft.modules.dpo import eval_mode
from lit_ft.modules.fine_tune import StepOutput
from lit_ft.utils.distributed import root_weights_gathered
from lit_ft.utils.metric_names import RL_METRICS, ROLLOUT_TOKENS_PER_S, TRAIN_TOKENS_PER_S, stage_metric

LossType = Literal["grpo", "rloo"]
Reference = Literal["adapter", "copy"]
ADVANTAGES = {"grpo": grpo_advantages, "rloo": rloo_advantages}


@dataclass
class Rollouts:
    """The N = P * G completions of a step (G per prompt, a prompt's completions next to each other), as a reward
    source reads them.

    ``prompt_ids``: each completion's prompt (chat template and assistant header included); ``completion_ids``:
    the sampled tokens, with the end-of-turn token when the completion ended; ``completions``: their text;
    ``references``: the row's reference answer (its last assistant turn); ``task_types``: the row's task type."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    completions: list[str]
    references: list[str]
    task_types: list[str]
    tokenizer: PreTrainedTokenizerBase
    device: torch.device


RewardSource = Callable[[Rollouts], torch.Tensor]  # rollouts -> rewards [N]


def checked_rewards(rewards: Any, count: int, source: object) -> torch.Tensor:
    """``rewards`` as a float32 tensor [count], refused (``ValueError`` naming the source) when it has another shape
    or a NaN/inf: one bad reward would turn every advantage of its group, and the update, into NaN."""
    values = torch.as_tensor(rewards, dtype=torch.float32)
    name = type(source).__name__
    if values.shape != (count,):
        raise ValueError(
            f"reward source {name} returned shape {tuple(values.shape)}, expected ({count},): one per completion"
        )
    bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"reward source {name} returned non-finite rewards for completions {bad}: {values[bad].tolist()}"
        )
    return values


def last_answer_spans(labels: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, end)`` of each row's last run of labelled tokens (its last assistant turn, the reference): what
    precedes ``start`` is the prompt. Rows with no labelled token, or no token before them, are refused."""
    spans = []
    for row, row_labels in enumerate(labels.tolist()):
        labelled = [t for t, label in enumerate(row_labels) if label != IGNORE_INDEX]
        if not labelled:
            raise ValueError(f"batch row {row} has no answer tokens: RL prompts are chat or prompt/completion rows")
        end = start = labelled[-1] + 1
        while start > 0 and row_labels[start - 1] != IGNORE_INDEX:
            start -= 1
        if start == 0:
            raise ValueError(f"batch row {row} has no prompt before its answer (raw text rows cannot be RL prompts)")
        spans.append((start, end))
    return spans


class RLModule(CausalLMModule):
    """Optimise a causal LM online against a reward source, as GRPO (Shao et al., 2024) or RLOO (Ahmadian et al.,
    2024) do.

    Each training step takes a batch of B SFT rows (chat or prompt/completion, padded): each row's last answer is the
    reference and the conversation before it the prompt. It then

    1. samples ``group_size`` (G) completions per prompt from the policy (``generate``: KV cache, dropout off,
       ``temperature``/``top_p``, at most ``max_new_tokens``; from the global torch generator, which checkpoints
       carry, so a resumed run samples what the uninterrupted one did);
    2. scores them with ``reward`` (a :data:`RewardSource`, ``lit_ft.eval.rewards``); a wrong shape or NaN is refused;
    3. computes advantages per group: ``loss_type=rloo`` leave-one-out, ``grpo`` mean/std
       (:func:`~lit_ft.losses.rloo_advantages`, :func:`~lit_ft.losses.grpo_advantages`);
    4. optimises, per completion token (end-of-turn included), the clipped policy-gradient loss plus ``beta`` times
       the k3 estimate of ``KL(policy || reference)`` (:func:`~lit_ft.losses.clipped_policy_loss`,
       :func:`~lit_ft.losses.kl_k3`), averaged over all the completion tokens of the optimizer step (the
       token-level mean of DAPO, Yu et al., 2025, through ``loss_to_backward``). One pass per rollout batch: the
       importance ratio is 1 and the objective is the policy gradient; the clip acts on later passes.

    The reference is the model training starts from: with a LoRA adapter (``reference=adapter``), the policy with its
    adapter disabled (start from a merged SFT export, so this is the SFT model, not the base); else a frozen copy.

    Validation is the causal LM's: the loss of the reference answers (``val/loss``, per task). Logged per step:
    ``train/{reward,reward_std,kl,clip_frac,completion_tokens,truncated}`` (``truncated``: the fraction of completions
    cut at ``max_new_tokens``), ``perf/rollout_tokens_per_s`` and ``perf/train_tokens_per_s``; per task (through
    ``TaskMetrics``) ``train/reward/<task>``, ``train/kl/<task>`` and the loss.

    Args:
        reward: the reward source (the ``reward`` config group).
        loss_type: ``grpo`` or ``rloo``.
        group_size: completions per prompt (G >= 2).
        max_new_tokens / temperature / top_p: sampling.
        beta: KL strength (0.04 as GRPO; 0 switches the reference off).
        epsilon: clip range of the ratio.
        reference: ``adapter`` or ``copy``.
        (others: see :class:`~lit_ft.modules.CausalLMModule`)
    """

    def __init__(
        self,
        *args: Any,
        reward: RewardSource,
        loss_type: LossType = "grpo",
        group_size: int = 4,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        beta: float = 0.04,
        epsilon: float = 0.2,
        reference: Reference = "adapter",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in ADVANTAGES:
            raise ValueError(f"unknown loss_type {loss_type!r} ({', '.join(ADVANTAGES)})")
        if reference not in get_args(Reference):
            raise ValueError(f"unknown reference {reference!r} ({', '.join(get_args(Reference))})")
        if group_size < 2:
            raise ValueError(
                f"group_size={group_size}: {loss_type} compares the completions of a prompt with each other (RLOO's "
                "baseline is the mean of the others, GRPO's the group mean), so it needs at least 2"
            )
        if max_new_tokens < 1 or temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError(f"max_new_tokens >= 1, temperature > 0 and 0 < top_p <= 1 needed, got "
                             f"{max_new_tokens}, {temperature}, {top_p}")  # fmt: skip
        if reference == "adapter" and beta and self.adapter is None:
            raise ValueError("reference=adapter disables the LoRA adapter, but there is none: add peft=lora, or "
                             "use module.reference=copy")  # fmt: skip
        self.reward, self.loss_type, self.group_size = reward, loss_type, group_size
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.beta, self.epsilon, self.reference = beta, epsilon, reference
        self.reference_model: nn.Module | None = None
        if reference == "copy":
            self.strict_loading = False  # the frozen copy is rebuilt from the pretrained model, not checkpointed
        self._train_started: float | None = None
        self._train_tokens = 0

    # --- reference ----------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        super().configure_model()
        if self.reference == "copy" and self.beta and self.reference_model is None:
            self.reference_model = copy.deepcopy(self.model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> RLModule:
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # Lightning switches every submodule to train mode; the copy stays fixed
        return self

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's log-probs of the sampled tokens [N, T-1]."""
        if self.reference == "adapter":
            with eval_mode(self.model), self.model.disable_adapter():
                return -self.token_losses(batch)["per_token_loss"]
        with eval_mode(self.reference_model):
            return -self.token_losses(batch, self.reference_model)["per_token_loss"]

    # --- rollouts -------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.trainer.datamodule.tokenizer

    @property
    def pad_id(self) -> int:
        """The id rollouts are padded with: the tokenizer's pad token, else its EOS (masked either way)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    @torch.no_grad()
    def sample(self, prompts: list[list[int]]) -> tuple[list[list[int]], int]:
        """G completions per prompt (prompt-major), each up to and including its end-of-turn token; and how many
        were cut at ``max_new_tokens``."""
        tokenizer, pad = self.tokenizer, self.pad_id
        length = max(map(len, prompts))
        input_ids = torch.tensor([[pad] * (length - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        with root_weights_gathered(self.model), eval_mode(self.model):
            output = self.model.generate(
                input_ids=input_ids.repeat_interleave(self.group_size, 0),
                attention_mask=mask.repeat_interleave(self.group_size, 0),
                max_new_tokens=self.max_new_tokens,
                do_sample=True,
                temperature=self.temperature,
                top_p=self.top_p,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                use_cache=True,
                # under FSDP2 each forward gathers weights from all ranks: a rank done sooner keeps stepping
                synced_gpus=self.trainer.world_size > 1,
            )
        completions, truncated = [], 0
        for ids in output[:, length:].tolist():
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
            else:
                truncated += 1
            completions.append(ids)
        return completions, truncated

    def rollout_batch(self, prompts: list[list[int]], completions: list[list[int]], task_ids: list[int]) -> dict:
        """Prompt + completion of each rollout as a padded batch: labels on the completion only, ``task_ids`` -1 on
        padding."""
        rows = [prompts[i // self.group_size] + c for i, c in enumerate(completions)]
        width = max(map(len, rows))

        def padded(values: list[list[int]], fill: int) -> torch.Tensor:
            return torch.tensor([v + [fill] * (width - len(v)) for v in values], device=self.device)

        prompt_lengths = [len(prompts[i // self.group_size]) for i in range(len(rows))]
        return {
            "input_ids": padded(rows, self.pad_id),
            "attention_mask": padded([[1] * len(r) for r in rows], 0),
            "labels": padded([[IGNORE_INDEX] * n + c for n, c in zip(prompt_lengths, completions)], IGNORE_INDEX),
            "task_ids": padded([[task_ids[i]] * len(r) for i, r in enumerate(rows)], -1),
        }

    # --- training ----------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        if "attention_mask" not in batch:
            raise ValueError("module=rl reads prompts from padded batches, one row each: set data.padding_free=false "
                             "and data.packing=false")  # fmt: skip
        spans = last_answer_spans(batch["labels"])
        prompts = [batch["input_ids"][row, :start].tolist() for row, (start, _) in enumerate(spans)]
        references = [self.tokenizer.decode(batch["input_ids"][row, s:e], skip_special_tokens=True).strip()
                      for row, (s, e) in enumerate(spans)]  # fmt: skip
        row_tasks = [int(batch["task_ids"][row, start]) for row, (start, _) in enumerate(spans)]
        started = time.perf_counter()
        completions, truncated = self.sample(prompts)
        generated = sum(map(len, completions))
        self.log(ROLLOUT_TOKENS_PER_S, generated / (time.perf_counter() - started), on_step=True, on_epoch=False)

        names = self.trainer.datamodule.task_names
        repeat = self.group_size
        rollouts = Rollouts(
            prompt_ids=[prompts[i // repeat] for i in range(len(completions))],
            completion_ids=completions,
            completions=[self.tokenizer.decode(c, skip_special_tokens=True).strip() for c in completions],
            references=[references[i // repeat] for i in range(len(completions))],
            task_types=[names[row_tasks[i // repeat]] for i in range(len(completions))],
            tokenizer=self.tokenizer,
            device=self.device,
        )
        rewards = checked_rewards(self.reward(rollouts), len(completions), self.reward).to(self.device)
        grouped = rewards.view(-1, repeat)
        advantages = ADVANTAGES[self.loss_type](grouped).flatten()

        self._train_started = time.perf_counter()
        rollout = self.rollout_batch(prompts, completions, [row_tasks[i // repeat] for i in range(len(completions))])
        self._train_tokens = int(rollout["attention_mask"].sum())
        out = self.token_losses(rollout)
        mask = out["loss_mask"].float()
        logps = -out["per_token_loss"]
        policy_loss, clipped = clipped_policy_loss(logps, logps.detach(), advantages, self.epsilon)
        kl = kl_k3(logps, self.reference_logps(rollout)) if self.beta else torch.zeros_like(policy_loss)
        per_token_loss = (policy_loss + self.beta * kl) * mask
        tokens = mask.sum(-1)
        metrics = {
            "reward": rewards.mean(),
            "reward_std": grouped.std(-1).mean(),
            "kl": (kl * mask).sum() / mask.sum().clamp(min=1),
            "clip_frac": (clipped.float() * mask).sum() / mask.sum().clamp(min=1),
            "completion_tokens": tokens.mean(),
            "truncated": torch.tensor(truncated / len(completions)),
        }
        for name in RL_METRICS:
            self.log(stage_metric("train", name), metrics[name].detach(), on_step=True, on_epoch=False,
                     batch_size=len(completions))  # fmt: skip
        return {
            "loss": self.loss_to_backward(per_token_loss.sum(), mask.sum()),
            "per_token_loss": per_token_loss.detach(),
            "loss_mask": out["loss_mask"],
            "task_ids": out["task_ids"],
            "example_metrics": {"reward": rewards, "kl": ((kl * mask).sum(-1) / tokens.clamp(min=1)).detach()},
            "example_task_ids": rollout["task_ids"][:, 0],
        }

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._train_started is not None:  # the policy's forward and backward (and the optimizer step)
            seconds = time.perf_counter() - self._train_started
            self.log(TRAIN_TOKENS_PER_S, self._train_tokens / seconds, on_step=True, on_epoch=False)
            self._train_started = None

"""Online RL of a causal LM (RLHF stage 3): sample groups of completions, score them, push the policy toward the
better ones with group-relative advantages (RLOO or GRPO) or a value head's (PPO), and a KL penalty toward the model
it started from."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from lit_ft.data.batch import IGNORE_INDEX, non_padding_tokens
from lit_ft.data.rollouts import ROLLOUT_KEYS, rollout_batch
from lit_ft.losses import (
    RewardScale,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae_advantages,
    grpo_advantages,
    kl_k3,
    kl_penalized_rewards,
    masked_mean,
    per_sequence_broadcast,
    per_sequence_sum,
    rloo_advantages,
    shift_labels,
    whiten,
)
from lit_ft.models.attention import SHARED_PROMPT_ATTENTION
from lit_ft.models.group_generation import generate_groups, left_padded, sampling_kwargs
from lit_ft.modules.causal_lm import CausalLMModule
from lit_ft.modules.dpo import eval_mode
from lit_ft.modules.fine_tune import StepOutput
from lit_ft.utils.distributed import gathered_objects, root_weights_gathered
from lit_ft.utils.metric_names import (
    PPO_METRICS,
    RL_METRICS,
    RL_VAL_REWARD,
    ROLLOUT_TOKENS_PER_S,
    TRAIN_TOKENS_PER_S,
    stage_metric,
)

LossType = Literal["grpo", "rloo", "ppo"]
Reference = Literal["adapter", "copy"]
ADVANTAGES = {"grpo": grpo_advantages, "rloo": rloo_advantages}  # group-relative; ppo's come from its value head

log = logging.getLogger(__name__)


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


# rollouts -> rewards [N]; a source whose reward carries a per-prompt weight says so with `scales_prompts = True`
# (read with getattr: plain functions are sources too), so that GRPO's group std is not allowed to divide it away.
RewardSource = Callable[[Rollouts], torch.Tensor]


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


class Prompts(NamedTuple):
    """The rows of a batch as RL prompts: each row's prompt (token ids, chat template and assistant header
    included), its reference answer as text and as the tokens the row trains on (content and end-of-turn token),
    and its task id."""

    ids: list[list[int]]
    references: list[str]
    answer_ids: list[list[int]]
    task_ids: list[int]


def groups_with_answers(
    completions: list[list[int]], answers: list[list[int]], sampled: int, copies: int
) -> list[list[int]]:
    """Each prompt's ``sampled`` completions followed by ``copies`` of its reference answer: prompt-major groups of
    ``sampled + copies`` (``completions`` holds ``sampled`` per prompt, prompt-major)."""
    groups = [
        completions[i * sampled : (i + 1) * sampled] + [list(answer)] * copies for i, answer in enumerate(answers)
    ]
    return [completion for group in groups for completion in group]


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
    """Optimise a causal LM online against a reward source, as GRPO (Shao et al., 2024), RLOO (Ahmadian et al.,
    2024) or PPO with a value head (Schulman et al., 2017; InstructGPT, Ouyang et al., 2022) do.

    Each new batch of B SFT rows (chat or prompt/completion, padded: each row's last answer is the reference and the
    conversation before it the prompt) becomes a batch of rollouts:

    1. ``group_size`` (G) completions per prompt sampled from the policy (``generate``: KV cache, each prompt's
       computed once for its group, dropout off, ``temperature``/``top_p``, at most ``max_new_tokens``; from the
       global torch generator, which checkpoints carry, so a resumed run samples what the uninterrupted one did).
       With ``reference_answers`` = k > 0, the last k of each group are the row's reference answer instead of
       samples (off-policy guidance, as LUFFY, Yan et al., 2025, mixes demonstrations into GRPO's groups): scored,
       given advantages and optimised like the samples, so a group whose samples all miss still has a gradient,
       toward the reference. Their ratio is taken against the policy at sampling time, as the samples' is (the
       first pass is then advantage-weighted SFT on the reference); they count in the loss, rewards and
       ``completion_tokens``, not in the rollout tokens/s or ``truncated``;
    2. scored by ``reward`` (a :data:`RewardSource`, ``lit_ft.eval.rewards``); a wrong shape or NaN is refused;
    3. advantages: ``loss_type=rloo`` leave-one-out, ``grpo`` group mean/std, one per completion
       (:func:`~lit_ft.losses.rloo_advantages`, :func:`~lit_ft.losses.grpo_advantages`, scaled by
       ``scale_rewards``); ``ppo`` per token, by GAE
       (``gamma``, ``lam``) on the values of a scalar head on the policy's last hidden state, from the reward on
       the last token minus ``beta`` times the per-token log-ratio to the reference, whitened over the batch
       (:func:`~lit_ft.losses.kl_penalized_rewards`, :func:`~lit_ft.losses.gae_advantages`,
       :func:`~lit_ft.losses.whiten`).

    The rollouts are then optimised for ``num_iterations`` (K) optimizer steps, one per training step: the loader
    serves each batch K times in a row (:class:`~lit_ft.data.repeated_batches.RepeatedBatches`, so an epoch is K
    steps per batch), sampling happens on the first, and later passes reuse the rollouts, their log-probabilities
    at sampling (``old_logps``), reference log-probs and advantages. The loss per completion token (end-of-turn
    included) is the clipped surrogate (:func:`~lit_ft.losses.clipped_policy_loss`: the ratio is 1 on the first
    pass, importance-weighted and clipped to ``[1 - epsilon, 1 + epsilon_high]`` on later ones), plus ``beta`` times
    the k3 estimate of ``KL(policy || reference)`` (:func:`~lit_ft.losses.kl_k3`) for grpo/rloo, or ``vf_coef``
    times the clipped value loss (:func:`~lit_ft.losses.clipped_value_loss`, clip ``value_clip``) for ppo; averaged
    over all the completion tokens of the optimizer step (the token-level mean of DAPO, Yu et al., 2025, through
    ``loss_to_backward``). Checkpoints carry the rollouts and the passes done, so a run resumed between two passes
    continues on the same rollouts. The value head is trained and checkpointed; the export is the policy alone.

    The rollouts' batch (:mod:`lit_ft.data.rollouts`): for grpo and rloo with ``shared_prompt`` each prompt runs
    once per group, its G completions branching off it in one padding-free row (the same per-token log-probs as
    the padded layout, at about 1/G of the prompt's cost; needs ``sdpa_varlen``); ppo, whose GAE runs along each
    sequence's own time axis, and ``shared_prompt=false`` train on padded rows ``prompt + completion``. Every
    per-completion quantity (advantages broadcast to tokens, per-completion KL and token counts) goes through the
    batch's ``completion_index``, so the step reads both layouts alike.

    The reference is the model training starts from: with a LoRA adapter (``reference=adapter``), the policy with its
    adapter disabled (start from a merged SFT export, so this is the SFT model, not the base); else a frozen copy.

    Validation: the causal LM's loss of the reference answers (``val/loss``, per task) and ``val/reward``, the mean
    reward of one completion per validation prompt, greedy (``val_temperature=0``) or sampled at
    ``val_temperature`` (from a generator seeded per batch, apart from training's); per task ``val/reward/<task>``
    (through ``TaskMetrics``). Early stopping may monitor it (``mode: max``). Logged per step:
    ``train/{reward,reward_std,kl,clip_frac,completion_tokens,truncated}`` (``truncated``: the fraction of completions
    cut at ``max_new_tokens``; ``kl`` the k3 estimate for every loss type), ppo also ``train/value_loss`` and
    ``train/explained_variance`` (of the returns by the values at sampling), ``perf/rollout_tokens_per_s`` (of the
    generation that made the rollouts being optimised) and ``perf/train_tokens_per_s``; per task (through
    ``TaskMetrics``) ``train/reward/<task>``, ``train/kl/<task>`` and the loss.

    Args:
        reward: the reward source (the ``reward`` config group).
        loss_type: ``grpo``, ``rloo`` or ``ppo``.
        scale_rewards: grpo's advantage scale (TRL's ``scale_rewards``): ``group`` std, ``batch`` std or ``none``
            (Dr. GRPO); a reward with per-prompt weights (``scales_prompts``, e.g. class-balanced label weights)
            needs ``batch`` or ``none``, or ``loss_type=rloo``, since the group's std divides the weight away.
        group_size: completions per prompt (G >= 2 for grpo and rloo, which compare them; >= 1 for ppo).
        reference_answers: how many of the G are the row's reference answer rather than samples (0 <= k < G).
        num_iterations: optimizer steps per batch of rollouts (K, TRL's ``num_iterations``); with K > 1 no gradient
            accumulation (each pass must follow an update).
        max_new_tokens / temperature / top_p: sampling; ``val_temperature``: validation's (0: greedy).
        beta: KL strength (0.04 as GRPO; 0 switches the reference off).
        epsilon: clip range of the ratio; ``epsilon_high``: its upper range when it differs (DAPO's clip-higher, TRL's
            ``epsilon_high``; None: ``epsilon``). It acts on the passes after the first (``num_iterations`` > 1).
        gamma / lam: ppo's discount and GAE lambda; vf_coef / value_clip: its value loss weight and clip range.
        reference: ``adapter`` or ``copy``.
        shared_prompt: grpo/rloo: lay each group out as its prompt once plus G branches (ppo: always padded);
            ``None``: where the model's attention can (``sdpa_varlen``); ``True`` refuses any other attention.
        (others: see :class:`~lit_ft.modules.CausalLMModule`)
    """

    # An exported model has no adapter to switch off for the reference, and evaluation (losses and greedy answers)
    # needs none: no KL term, no reference built.
    evaluation_arguments = {"beta": 0.0}

    def __init__(
        self,
        *args: Any,
        reward: RewardSource,
        loss_type: LossType = "grpo",
        scale_rewards: RewardScale = "group",
        group_size: int = 4,
        reference_answers: int = 0,
        num_iterations: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        val_temperature: float = 0.0,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        gamma: float = 1.0,
        lam: float = 0.95,
        vf_coef: float = 0.1,
        value_clip: float = 0.2,
        reference: Reference = "adapter",
        shared_prompt: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if loss_type not in get_args(LossType):
            raise ValueError(f"unknown loss_type {loss_type!r} ({', '.join(get_args(LossType))})")
        if reference not in get_args(Reference):
            raise ValueError(f"unknown reference {reference!r} ({', '.join(get_args(Reference))})")
        if scale_rewards not in get_args(RewardScale) or (scale_rewards != "group" and loss_type != "grpo"):
            raise ValueError(f"scale_rewards={scale_rewards!r} with loss_type={loss_type}: grpo takes "
                             f"{', '.join(get_args(RewardScale))}; rloo and ppo have their own scale")  # fmt: skip
        if loss_type == "grpo" and scale_rewards == "group" and getattr(reward, "scales_prompts", False):
            raise ValueError(
                f"the reward {type(reward).__name__} weighs each prompt (label_weights), and GRPO's group std "
                "divides that weight away: set module.scale_rewards=none (or batch), or module.loss_type=rloo"
            )
        if loss_type in ADVANTAGES and group_size < 2:
            raise ValueError(
                f"group_size={group_size}: {loss_type} compares the completions of a prompt with each other (RLOO's "
                "baseline is the mean of the others, GRPO's the group mean), so it needs at least 2"
            )
        if group_size < 1 or num_iterations < 1:
            raise ValueError(f"group_size >= 1 and num_iterations >= 1 needed, got {group_size}, {num_iterations}")
        if not 0 <= reference_answers < group_size:
            raise ValueError(f"reference_answers={reference_answers} of a group of {group_size}: 0 <= k < "
                             "group_size, so that each group holds at least one sample of the policy")  # fmt: skip
        if max_new_tokens < 1 or temperature <= 0 or not 0 < top_p <= 1 or val_temperature < 0:
            raise ValueError(f"max_new_tokens >= 1, temperature > 0, 0 < top_p <= 1 and val_temperature >= 0 "
                             f"needed, got {max_new_tokens}, {temperature}, {top_p}, {val_temperature}")  # fmt: skip
        if not 0 < epsilon < 1 or (epsilon_high is not None and epsilon_high < epsilon):
            raise ValueError(f"0 < epsilon < 1 and epsilon_high >= epsilon (or null) needed, got {epsilon}, "
                             f"{epsilon_high}")  # fmt: skip
        if not (0 <= gamma <= 1 and 0 <= lam <= 1 and vf_coef >= 0 and value_clip > 0):
            raise ValueError(f"0 <= gamma, lam <= 1, vf_coef >= 0 and value_clip > 0 needed, got {gamma}, {lam}, "
                             f"{vf_coef}, {value_clip}")  # fmt: skip
        if reference == "adapter" and beta and self.adapter is None:
            raise ValueError("reference=adapter disables the LoRA adapter, but there is none: add peft=lora, or "
                             "use module.reference=copy")  # fmt: skip
        self.reward, self.loss_type, self.group_size = reward, loss_type, group_size
        self.reference_answers = reference_answers
        self.scale_rewards = scale_rewards
        self.num_iterations = num_iterations
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.val_temperature = val_temperature
        self.beta, self.epsilon, self.epsilon_high, self.reference = beta, epsilon, epsilon_high, reference
        self.gamma, self.lam, self.vf_coef, self.value_clip = gamma, lam, vf_coef, value_clip
        # ppo's GAE needs one row per completion; None: decided by the model's attention in configure_model
        self.shared_prompt = shared_prompt if loss_type in ADVANTAGES else False
        self.reference_model: nn.Module | None = None
        self.value_head: nn.Linear | None = None  # ppo: built with the model
        if reference == "copy":
            self.strict_loading = False  # the frozen copy is rebuilt from the pretrained model, not checkpointed
        # The rollouts being optimised (their batch, rewards and what the first pass computed) and the passes
        # over them done so far; checkpointed.
        self.rollouts: dict[str, torch.Tensor] | None = None
        self.passes_done = 0
        self._trained_batch: dict[str, torch.Tensor] | None = None  # what the last training step ran on
        self.val_reward = MeanMetric()
        self._train_started: float | None = None
        self._train_tokens = 0

    # --- model: the reference, the value head ------------------------------------------------------------------
    def configure_model(self) -> None:
        super().configure_model()
        attention = self._causal_lm().config._attn_implementation
        if self.shared_prompt is None:
            self.shared_prompt = attention in SHARED_PROMPT_ATTENTION
            log.info("Rollouts %s (attention %s)", "share each prompt" if self.shared_prompt else "padded", attention)
        elif self.shared_prompt and attention not in SHARED_PROMPT_ATTENTION:
            raise ValueError(
                f"module.shared_prompt=true with attention {attention}: only {', '.join(SHARED_PROMPT_ATTENTION)} "
                "keeps each completion of a group attending to its prompt and never to the others. Load the model "
                "with attn_implementation=sdpa_varlen, or set shared_prompt=false (padded rollouts)"
            )
        if self.reference == "copy" and self.beta and self.reference_model is None:
            self.reference_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        if self.loss_type == "ppo" and self.value_head is None:
            # Zero-initialised: values start at 0, the plain return; trained (and checkpointed) with the adapter.
            hidden = self._causal_lm().config.hidden_size
            self.value_head = nn.Linear(hidden, 1, device=next(self.model.parameters()).device)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.trainable_names |= {f"value_head.{name}" for name, _ in self.value_head.named_parameters()}

    def train(self, mode: bool = True) -> RLModule:
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # Lightning switches every submodule to train mode; the copy stays fixed
        return self

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference's log-probs of the rollouts' tokens [R, T-1] (rows and length of the layout)."""
        if self.reference == "adapter":
            with eval_mode(self.model), self.model.disable_adapter():
                return -self.token_losses(batch)["per_token_loss"]
        with eval_mode(self.reference_model):
            return -self.token_losses(batch, self.reference_model)["per_token_loss"]

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The value head on the last hidden states [N, T-1, H] -> values [N, T-1] (float32)."""
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    # --- rollouts -------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.trainer.datamodule.tokenizer

    @property
    def pad_id(self) -> int:
        """The id rollouts are padded with: the tokenizer's pad token, else its EOS (masked either way)."""
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    def prompts_of(self, batch: dict[str, torch.Tensor]) -> Prompts:
        """The batch's rows as :class:`Prompts`."""
        if "attention_mask" not in batch:
            raise ValueError("module=rl reads prompts from padded batches, one row each: set data.padding_free=false "
                             "and data.packing=false")  # fmt: skip
        spans = last_answer_spans(batch["labels"])
        rows = batch["input_ids"].tolist()
        answers = [ids[start:end] for ids, (start, end) in zip(rows, spans)]
        return Prompts(
            ids=[ids[:start] for ids, (start, _) in zip(rows, spans)],
            references=[self.tokenizer.decode(answer, skip_special_tokens=True).strip() for answer in answers],
            answer_ids=answers,
            task_ids=[int(batch["task_ids"][row, start]) for row, (start, _) in enumerate(spans)],
        )

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], count: int, temperature: float) -> tuple[list[list[int]], int]:
        """``count`` completions per prompt (prompt-major), each up to and including its end-of-turn token, sampled
        at ``temperature`` (0: greedy); and how many were cut at ``max_new_tokens``. Each prompt is run through
        the model once for its ``count`` completions (:func:`~lit_ft.models.group_generation.generate_groups`)."""
        tokenizer, pad = self.tokenizer, self.pad_id
        input_ids, mask = left_padded(prompts, pad, self.device)
        length = input_ids.shape[1]
        with root_weights_gathered(self.model), eval_mode(self.model):
            output = generate_groups(  # each prompt's KV cache computed once for its `count` completions
                self.model,
                input_ids,
                mask,
                count,
                max_new_tokens=self.max_new_tokens,
                **sampling_kwargs(temperature > 0, temperature, self.top_p),
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
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

    def score(
        self, prompts: list[list[int]], completions: list[list[int]], references: list[str], row_tasks: list[int]
    ) -> torch.Tensor:
        """The reward source's rewards [N] of the completions (``N // len(prompts)`` per prompt, prompt-major)."""
        repeat, names = len(completions) // len(prompts), self.trainer.datamodule.task_names
        rollouts = Rollouts(
            prompt_ids=[prompts[i // repeat] for i in range(len(completions))],
            completion_ids=completions,
            completions=[self.tokenizer.decode(c, skip_special_tokens=True).strip() for c in completions],
            references=[references[i // repeat] for i in range(len(completions))],
            task_types=[names[row_tasks[i // repeat]] for i in range(len(completions))],
            tokenizer=self.tokenizer,
            device=self.device,
        )
        return checked_rewards(self.reward(rollouts), len(completions), self.reward).to(self.device)

    def new_rollouts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sample and score the rollouts of a batch of prompts: their batch (:func:`~lit_ft.data.rollouts.
        rollout_batch`, in this module's layout), ``rewards`` [N], each completion's ``example_task_ids`` [N] and
        ``truncated`` (the fraction of the samples cut at ``max_new_tokens``)."""
        prompts = self.prompts_of(batch)
        sampled = self.group_size - self.reference_answers
        started = time.perf_counter()
        completions, truncated = self.sample(prompts.ids, sampled, self.temperature)
        generated = sum(map(len, completions))
        self.log(ROLLOUT_TOKENS_PER_S, generated / (time.perf_counter() - started), on_step=True, on_epoch=False)
        truncated_fraction = torch.tensor(truncated / len(completions))
        if self.reference_answers:
            completions = groups_with_answers(completions, prompts.answer_ids, sampled, self.reference_answers)
        rewards = self.score(prompts.ids, completions, prompts.references, prompts.task_ids)
        rollout = rollout_batch(prompts.ids, completions, prompts.task_ids, self.pad_id, self.shared_prompt)
        return {
            **{key: value.to(self.device) for key, value in rollout.items()},
            "rewards": rewards,
            "example_task_ids": torch.tensor(prompts.task_ids, device=self.device).repeat_interleave(self.group_size),
            "truncated": truncated_fraction,
        }

    def first_pass(
        self, rollouts: dict[str, torch.Tensor], logps: torch.Tensor, values: torch.Tensor | None, mask: torch.Tensor
    ) -> None:
        """Add what the later passes over ``rollouts`` reuse, from the first pass's forward (the policy that
        sampled them; ``logps``, ``values`` [R, T-1] without gradient, ``mask`` the completion tokens):
        ``old_logps``, the reference's ``ref_logps``, the ``advantages`` per token [R, T-1] (grpo/rloo: each
        completion's on its tokens) and, for ppo, ``old_values`` and ``returns``."""
        rollouts["old_logps"] = logps
        rollouts["ref_logps"] = self.reference_logps(self.batch_of(rollouts)) if self.beta else logps
        if self.loss_type in ADVANTAGES:
            grouped = rollouts["rewards"].view(-1, self.group_size)
            scale = {"scale": self.scale_rewards} if self.loss_type == "grpo" else {}
            advantages = ADVANTAGES[self.loss_type](grouped, **scale).flatten()
            rollouts["advantages"] = per_sequence_broadcast(advantages, shift_labels(rollouts["completion_index"]))
            return
        token_rewards = kl_penalized_rewards(rollouts["rewards"], logps, rollouts["ref_logps"], mask, self.beta)
        advantages, rollouts["returns"] = gae_advantages(token_rewards, values, mask, self.gamma, self.lam)
        rollouts["advantages"], rollouts["old_values"] = whiten(advantages, mask), values

    @staticmethod
    def batch_of(rollouts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch the policy runs on, out of the rollouts and what was computed on them."""
        return {key: rollouts[key] for key in ROLLOUT_KEYS if key in rollouts}

    # --- training ----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Have the datamodule serve each training batch ``num_iterations`` times (refused where it cannot)."""
        if stage != "fit":
            return
        if self.num_iterations > 1 and self.trainer.accumulate_grad_batches > 1:
            raise ValueError(f"module.num_iterations={self.num_iterations} takes one optimizer step per pass over a "
                             "batch of rollouts: set trainer.accumulate_grad_batches=1 (raise data.batch_size "
                             "instead)")  # fmt: skip
        datamodule = self.trainer.datamodule
        if hasattr(datamodule, "batch_repeats"):
            datamodule.batch_repeats = self.num_iterations
        elif self.num_iterations > 1:
            raise ValueError(f"module.num_iterations needs a datamodule that can repeat its training batches (lit_ft."
                             f"data.FineTuneDataModule's batch_repeats); {type(datamodule).__name__} cannot")  # fmt: skip

    def teardown(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if stage == "fit" else None
        if hasattr(datamodule, "batch_repeats"):  # a later fit on the same data (a curriculum stage) starts plain
            datamodule.batch_repeats = 1

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        if self.rollouts is None:
            self.rollouts = self.new_rollouts(batch)
        rollouts = self.rollouts = {key: value.to(self.device) for key, value in self.rollouts.items()}
        rollout = self._trained_batch = self.batch_of(rollouts)
        self._train_started = time.perf_counter()
        self._train_tokens = int(non_padding_tokens(rollout))
        ppo = self.loss_type == "ppo"
        out = self.token_losses(rollout, with_hidden=ppo)
        mask = out["loss_mask"].float()
        logps = -out["per_token_loss"]
        values = self.values(out.pop("hidden")) if ppo else None
        if "old_logps" not in rollouts:
            self.first_pass(rollouts, logps.detach(), values.detach() if ppo else None, mask)
        policy_loss, clipped = clipped_policy_loss(
            logps, rollouts["old_logps"], rollouts["advantages"], self.epsilon, self.epsilon_high
        )
        kl = kl_k3(logps, rollouts["ref_logps"]) if self.beta else torch.zeros_like(policy_loss)
        metrics = {}
        if ppo:
            value_loss, _ = clipped_value_loss(values, rollouts["old_values"], rollouts["returns"], self.value_clip)
            per_token_loss = (policy_loss + self.vf_coef * value_loss) * mask
            metrics["value_loss"] = masked_mean(value_loss, mask)
            metrics["explained_variance"] = explained_variance(rollouts["old_values"], rollouts["returns"], mask)
            kl = kl.detach()  # the KL is in the rewards: logged, not optimised
        else:
            per_token_loss = (policy_loss + self.beta * kl) * mask
        # per completion [N]: sums over its tokens, wherever the layout put them
        rewards, owners = rollouts["rewards"], shift_labels(rollout["completion_index"])
        tokens = per_sequence_sum(mask, owners, len(rewards))
        grouped = rewards.view(-1, self.group_size)
        metrics |= {
            "reward": rewards.mean(),
            "reward_std": grouped.std(-1).mean() if self.group_size > 1 else torch.zeros(()),
            "kl": masked_mean(kl, mask),
            "clip_frac": masked_mean(clipped.float(), mask),
            "completion_tokens": tokens.mean(),
            "truncated": rollouts["truncated"],
        }
        for name in RL_METRICS + (PPO_METRICS if ppo else ()):
            self.log(stage_metric("train", name), metrics[name].detach(), on_step=True, on_epoch=False,
                     batch_size=len(rewards))  # fmt: skip
        self.passes_done += 1
        if self.passes_done == self.num_iterations:  # used up: the next step samples from the next batch
            self.rollouts, self.passes_done = None, 0
        return {
            "loss": self.loss_to_backward(per_token_loss.sum(), mask.sum()),
            "per_token_loss": per_token_loss.detach(),
            "loss_mask": out["loss_mask"],
            "task_ids": out["task_ids"],
            "example_metrics": {
                "reward": rewards,
                "kl": per_sequence_sum(kl.detach() * mask, owners, len(rewards)) / tokens.clamp(min=1),
            },
            "example_task_ids": rollouts["example_task_ids"],
        }

    def trained_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The rollouts the last training step trained on (``TrainedBatch``: what the throughput counts)."""
        return self._trained_batch if self._trained_batch is not None else batch

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._train_started is not None:  # the policy's forward and backward (and the optimizer step)
            seconds = time.perf_counter() - self._train_started
            self.log(TRAIN_TOKENS_PER_S, self._train_tokens / seconds, on_step=True, on_epoch=False)
            self._train_started = None

    # --- validation: the reward of the policy's completions -------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.val_reward.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> StepOutput:
        out = super().validation_step(batch, batch_idx)
        prompts = self.prompts_of(batch)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # training's generators stay where they were
            torch.manual_seed(batch_idx)
            completions, _ = self.sample(prompts.ids, 1, self.val_temperature)
        rewards = self.score(prompts.ids, completions, prompts.references, prompts.task_ids)
        self.val_reward.update(rewards)
        task_ids = torch.tensor(prompts.task_ids, device=self.device)
        return {**out, "example_metrics": {"reward": rewards}, "example_task_ids": task_ids}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log(RL_VAL_REWARD, self.val_reward.compute(), sync_dist=False)

    # --- checkpoints: the rollouts being optimised ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save every rank's rollouts (each rank optimises its own; rank 0 writes the checkpoint) and the passes
        done over them, when a checkpoint falls between two passes."""
        super().on_save_checkpoint(checkpoint)
        local = None if self.rollouts is None else {key: value.detach().cpu() for key, value in self.rollouts.items()}
        ranks = gathered_objects(local)
        if any(rollouts is not None for rollouts in ranks):
            checkpoint["rl_rollouts"] = {"passes_done": self.passes_done, "ranks": ranks}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("rl_rollouts")
        self.rollouts, self.passes_done = None, 0
        if saved is None:
            return
        if len(saved["ranks"]) != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint was taken between two passes over the rollouts of {len(saved['ranks'])} processes, "
                f"and this run has {self.trainer.world_size}: resume with as many (trainer.devices), or from a "
                "checkpoint taken after a batch's last pass"
            )
        self.rollouts, self.passes_done = dict(saved["ranks"][self.global_rank]), saved["passes_done"]
        log.info("Resuming between two passes over the saved rollouts (%d of %d done)", self.passes_done,
                 self.num_iterations)  # fmt: skip

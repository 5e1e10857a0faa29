"""Pure loss functions on tensors: per-token or per-example values; modules choose the reduction."""

from lit_ft.losses.causal_lm import masked_head_cross_entropy, shift_labels, token_cross_entropy
from lit_ft.losses.dpo import dpo_loss
from lit_ft.losses.logps import completion_logps, per_sequence_broadcast, per_sequence_sum
from lit_ft.losses.orpo import orpo_loss
from lit_ft.losses.policy_gradient import (
    RewardScale,
    clipped_policy_loss,
    grpo_advantages,
    kl_k3,
    rloo_advantages,
)
from lit_ft.losses.ppo import (
    clipped_value_loss,
    explained_variance,
    gae_advantages,
    kl_penalized_rewards,
    masked_mean,
    whiten,
)
from lit_ft.losses.regularization import ewc_penalty, l2_sp_penalty
from lit_ft.losses.reward import reward_loss
from lit_ft.losses.simpo import simpo_loss

__all__ = [
    "clipped_policy_loss",
    "clipped_value_loss",
    "completion_logps",
    "dpo_loss",
    "ewc_penalty",
    "explained_variance",
    "gae_advantages",
    "grpo_advantages",
    "RewardScale",
    "kl_k3",
    "kl_penalized_rewards",
    "l2_sp_penalty",
    "masked_head_cross_entropy",
    "masked_mean",
    "orpo_loss",
    "per_sequence_broadcast",
    "per_sequence_sum",
    "reward_loss",
    "rloo_advantages",
    "shift_labels",
    "simpo_loss",
    "token_cross_entropy",
    "whiten",
]

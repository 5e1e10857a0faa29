"""Online policy optimisation of a causal LM: group-relative advantages, the clipped policy-gradient objective and
the KL penalty toward a reference. Completions are sampled in groups of ``G`` per prompt; rewards are [P, G]."""

from __future__ import annotations

from typing import Literal, get_args

import torch


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO's leave-one-out advantages (Ahmadian et al., 2024, "Back to Basics"; Kool et al., 2019).

    ``A_i = r_i - 1/(G-1) * sum_{j != i} r_j = G/(G-1) * (r_i - mean_j r_j)``: each completion's baseline is the
    mean reward of the other completions of its prompt, an unbiased baseline (it does not depend on ``y_i``).

    Args:
        rewards: [P, G], G >= 2 completions per prompt.

    Returns:
        [P, G] advantages (float32).
    """
    groups = rewards.shape[-1]
    if groups < 2:
        raise ValueError(
            f"RLOO needs at least 2 completions per prompt (got {groups}): the baseline of each is the others' mean"
        )
    rewards = rewards.float()
    return groups / (groups - 1) * (rewards - rewards.mean(-1, keepdim=True))


RewardScale = Literal["group", "batch", "none"]


def grpo_advantages(rewards: torch.Tensor, scale: RewardScale = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages (Shao et al., 2024, DeepSeekMath), ``scale`` as TRL's ``scale_rewards``.

    ``A_i = (r_i - mean_j r_j) / s``, the mean over the prompt's group, and ``s``:

    - ``group``: ``std_j r_j + eps``, the unbiased standard deviation over the group (GRPO; TRL's default); a
      group whose rewards are all equal gets advantages 0 (no signal);
    - ``batch``: the unbiased standard deviation of all of ``rewards`` ``+ eps``, one scale for every group (the RL
      module passes each process' batch);
    - ``none``: 1 (Dr. GRPO, Liu et al., 2025: dividing by the group's std favours groups that are almost all right
      or all wrong, and divides away any per-prompt scale of the reward, such as a class weight).

    Args:
        rewards: [P, G], G >= 2 completions per prompt.

    Returns:
        [P, G] advantages (float32).
    """
    if rewards.shape[-1] < 2:
        raise ValueError(
            f"GRPO needs at least 2 completions per prompt (got {rewards.shape[-1]}): a group of one has no spread"
        )
    if scale not in get_args(RewardScale):
        raise ValueError(f"unknown reward scale {scale!r} ({', '.join(get_args(RewardScale))})")
    rewards = rewards.float()
    centred = rewards - rewards.mean(-1, keepdim=True)
    if scale == "group":
        return centred / (rewards.std(-1, keepdim=True) + eps)
    if scale == "batch":
        return centred / (rewards.std() + eps)
    return centred


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || pi_ref)`` on tokens sampled from ``pi``: Schulman's k3 (2020), as in GRPO.

    ``k3 = exp(ref - logp) - (ref - logp) - 1 >= 0``: unbiased (``E_pi[exp(ref - logp)] = 1``), never negative,
    lower variance than ``logp - ref``. Gradients flow through ``logps`` only.

    Args:
        logps / ref_logps: [N, T] log-probabilities of the sampled tokens under the policy and the reference.
    """
    delta = ref_logps.float() - logps.float()
    return torch.exp(delta) - delta - 1


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, per token (Schulman et al., 2017), as GRPO and RLOO optimise it.

    ``rho = exp(logp - logp_old)``; ``loss = -min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``. On the first
    pass over a rollout ``logp_old = logp.detach()``, so ``rho = 1`` and the gradient is the policy gradient
    ``-A * grad logp``; later passes over the same rollout are importance-weighted and clipped. ``eps_high >
    eps_low`` is DAPO's clip-higher (Yu et al., 2025; 0.28 against 0.2 there): a token of positive advantage may
    gain more probability before its gradient stops, which keeps unlikely tokens from being shut out (entropy
    collapse).

    Args:
        logps / old_logps: [N, T] log-probabilities of the sampled tokens now and when they were sampled.
        advantages: [N], one per completion (broadcast over its tokens), or [N, T] per token (PPO's GAE).
        epsilon: lower clip range ``eps_low``, and the upper one too when ``epsilon_high`` is None.
        epsilon_high: upper clip range ``eps_high``.

    Returns:
        per-token loss [N, T] (float32) and where the ratio was clipped [N, T] (bool: the clipped term was the min).
    """
    ratio = torch.exp(logps.float() - old_logps.float())
    advantages = advantages.float()
    if advantages.dim() < ratio.dim():
        advantages = advantages.unsqueeze(-1)
    unclipped = ratio * advantages
    upper = epsilon if epsilon_high is None else epsilon_high
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + upper) * advantages
    return -torch.minimum(unclipped, clipped), clipped < unclipped

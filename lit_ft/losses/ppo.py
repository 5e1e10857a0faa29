"""PPO with a value head, as RLHF's InstructGPT recipe runs it (Ouyang et al., 2022; Ziegler et al., 2019; TRL's
PPOTrainer): per-token rewards (the reward source's score on the last token, a KL penalty on every token), GAE
advantages from a learned value per token, whitened, and the clipped value loss. The policy's loss is
:func:`~lit_ft.losses.clipped_policy_loss` with these per-token advantages.

Tensors are [N, T] over the rollouts' shifted token positions; ``mask`` marks the completion tokens (one contiguous
run per row, at least one token each); position ``t`` is the state before the completion token ``t`` is emitted."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` (a scalar)."""
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The unbiased variance of ``values`` where ``mask`` (``sum (x - mean)^2 / (n - 1)``), as TRL's."""
    mask = mask.float()
    count = mask.sum()
    centred = (values - masked_mean(values, mask)) * mask
    return (centred**2).sum() / (count - 1).clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked entries (0 elsewhere): PPO's advantage normalisation, so
    the step size does not depend on the reward's scale."""
    return (values - masked_mean(values, mask)) * torch.rsqrt(masked_var(values, mask) + eps) * mask.float()


def kl_penalized_rewards(
    scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """InstructGPT's per-token reward: ``r_t = -beta * (logp_t - ref_t)``, plus the reward source's score on the
    completion's last token.

    The sum over a completion is ``score - beta * log(pi(y|x) / pi_ref(y|x))``: the score with a KL penalty
    (its single-sample k1 estimate) toward the reference, spread over the tokens that incurred it.

    Args:
        scores: [N] one per completion.
        logps / ref_logps: [N, T] log-probabilities of the sampled tokens under the policy (at sampling) and the
            reference.
        mask: [N, T] the completion tokens.
        beta: KL coefficient.

    Returns:
        [N, T] float32 rewards, 0 outside the mask.
    """
    mask = mask.float()
    rewards = -beta * (logps.float() - ref_logps.float()) * mask
    last = (mask * torch.arange(mask.shape[-1], device=mask.device)).argmax(-1)  # the last completion token
    return rewards.scatter_add(-1, last.unsqueeze(-1), scores.float().unsqueeze(-1))


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016), per completion.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V`` after the last token is 0: the episode ends);
    ``A_t = delta_t + gamma * lam * A_{t+1}``; the value targets are the returns ``R_t = A_t + V_t``.
    ``lam = 1`` gives the Monte-Carlo return minus the value, ``lam = 0`` the one-step TD error.

    Args:
        rewards / values: [N, T] (values without gradient: they are targets here).
        mask: [N, T] the completion tokens.

    Returns:
        advantages and returns [N, T] float32, 0 outside the mask.
    """
    mask = mask.float()
    rewards, values = rewards.float() * mask, values.float() * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[-1])):
        # past the last completion token: no next value, nothing carried back
        running = (rewards[:, t] + gamma * next_value - values[:, t]) + gamma * lam * running
        running = running * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss, per token (as in OpenAI's baselines and TRL):
    ``0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)``; the value may not move more than ``c`` from
    its value at sampling for the loss to keep falling.

    Args:
        values / old_values: [N, T] the value now (with gradient) and at sampling.
        returns: [N, T] the GAE returns (targets).

    Returns:
        per-token loss [N, T] float32 and where the clipped term was the larger [N, T] bool.
    """
    values, old_values, returns = values.float(), old_values.float(), returns.float()
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    plain, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(plain, clipped), clipped > plain


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(R - V) / Var(R)`` over the masked tokens: 1 when the values predict the returns, 0 when they do
    no better than the mean, negative when worse (a scalar)."""
    return 1 - masked_var(returns.float() - values.float(), mask) / masked_var(returns.float(), mask).clamp(min=1e-8)

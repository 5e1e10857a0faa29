"""Loss functions against hand computations: per-token cross-entropy, and the online-RL losses (PPO's too)."""

from __future__ import annotations

import math

import pytest
import torch

from lit_ft.losses import (
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae_advantages,
    grpo_advantages,
    kl_k3,
    kl_penalized_rewards,
    rloo_advantages,
    token_cross_entropy,
    whiten,
)


def test_token_cross_entropy_matches_hand_computation():
    # one sequence of 3 tokens over a vocabulary of 2; position t predicts label t+1
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    per_token, mask = token_cross_entropy(logits, labels)
    expected_first = -math.log(0.5)  # uniform logits, target 1
    expected_second = -math.log(math.exp(2) / (math.exp(2) + 1))  # target 0 after logits [2, 0]
    torch.testing.assert_close(per_token, torch.tensor([[expected_first, expected_second]]))
    assert mask.tolist() == [[True, True]]


def test_ignored_targets_have_zero_loss_and_false_mask():
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, -100, 3], [-100, -100, -100, -100]])
    per_token, mask = token_cross_entropy(logits, labels)
    assert mask.tolist() == [[True, False, True], [False, False, False]]
    assert per_token[~mask].abs().sum() == 0


def test_masked_head_loss_and_gradients_equal_full_logits(tiny_model):
    from lit_ft.losses import masked_head_cross_entropy

    labels = torch.tensor([[-100, -100, 7, 8, 9, -100], [-100, 3, 4, -100, -100, -100]])
    ids = torch.randint(5, 500, labels.shape)
    labels = torch.where(labels == -100, labels, ids)
    head = tiny_model.get_output_embeddings()

    hidden = tiny_model.model(input_ids=ids).last_hidden_state
    selective, mask = masked_head_cross_entropy(hidden, head, labels)
    selective.sum().backward()
    grads = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()

    full, full_mask = token_cross_entropy(tiny_model(input_ids=ids).logits, labels)
    full.sum().backward()
    assert torch.equal(mask, full_mask)
    torch.testing.assert_close(selective, full, atol=1e-6, rtol=1e-5)
    for grad, parameter in zip(grads, tiny_model.parameters()):
        torch.testing.assert_close(grad, parameter.grad, atol=1e-5, rtol=1e-4)


def test_chunked_masked_head_equals_one_piece(tiny_model):
    """Scoring loss tokens in recomputed chunks changes memory, not the loss or its gradients."""
    from lit_ft.losses import masked_head_cross_entropy

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (2, 9), generator=generator)
    labels = ids.clone()
    labels[:, :3] = -100
    head = tiny_model.get_output_embeddings()
    results = []
    for chunk_size in (None, 4):  # 12 loss tokens: chunks of 4, 4, 4
        tiny_model.zero_grad()
        hidden = tiny_model.model(input_ids=ids).last_hidden_state
        per_token, mask = masked_head_cross_entropy(hidden, head, labels, chunk_size=chunk_size)
        per_token.sum().backward()
        results.append((per_token.detach(), [p.grad.clone() for p in tiny_model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-5)
    for chunked, whole in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)


def test_ewc_penalty_matches_hand_computation():
    from lit_ft.losses import ewc_penalty

    parameters = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    anchors = [torch.tensor([0.0, 1.0]), torch.tensor([[1.0]])]
    fishers = [torch.tensor([2.0, 0.5]), torch.tensor([[4.0]])]
    # sum F (theta - theta0)^2 = 2 * 1 + 0.5 * 1 + 4 * 4, no 1/2
    assert ewc_penalty(parameters, anchors, fishers).item() == 18.5
    with pytest.raises(ValueError):  # one Fisher per parameter
        ewc_penalty(parameters, anchors, fishers[:1])


# --- online RL: group-relative advantages, the clipped objective, the k3 KL --------------------------------------
def test_rloo_advantage_is_reward_minus_the_mean_of_the_others():
    # G = 4, rewards 1, 0, 0, 1: a rewarded completion's baseline is (0 + 0 + 1) / 3, an unrewarded one's 2/3
    advantages = rloo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]))
    expected = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(advantages, expected)
    with pytest.raises(ValueError, match="at least 2 completions"):
        rloo_advantages(torch.ones(3, 1))


def test_grpo_advantage_is_the_group_z_score_with_the_unbiased_std():
    # rewards 1, 2, 3: mean 2, unbiased std sqrt(((1)^2 + 0 + 1^2) / 2) = 1; a constant group gives 0, not NaN
    advantages = grpo_advantages(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]), eps=1e-4)
    torch.testing.assert_close(advantages, torch.tensor([[-1 / 1.0001, 0.0, 1 / 1.0001], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 completions"):
        grpo_advantages(torch.ones(2, 1))


def test_grpo_advantage_scales_by_the_batch_std_or_not_at_all():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    centred = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # batch: one scale for all groups, the unbiased std of the six rewards (mean 3.5: 2.5, 1.5, 0.5, 1.5 x 3)
    batch_std = math.sqrt((2.5**2 + 1.5**2 + 0.5**2 + 3 * 1.5**2) / 5)
    torch.testing.assert_close(grpo_advantages(rewards, scale="batch", eps=0.0), centred / batch_std)
    # none (Dr. GRPO): the group mean subtracted, and a reward scaled by 3 gives advantages scaled by 3
    torch.testing.assert_close(grpo_advantages(rewards, scale="none"), centred)
    torch.testing.assert_close(grpo_advantages(3 * rewards, scale="none"), 3 * centred)
    with pytest.raises(ValueError, match="unknown reward scale 'std'"):
        grpo_advantages(rewards, scale="std")


def test_kl_k3_matches_its_formula_and_is_zero_at_equal_policies():
    # pi = 0.5, ref = 0.25: delta = log 0.5; k3 = 0.5 - log 0.5 - 1 = 0.193147...
    logps, ref = torch.tensor([[math.log(0.5), -1.0]]), torch.tensor([[math.log(0.25), -1.0]])
    torch.testing.assert_close(kl_k3(logps, ref), torch.tensor([[0.5 - math.log(0.5) - 1, 0.0]]))


def test_clipped_policy_loss_takes_the_pessimistic_term():
    # ratio 1.5 or 0.5 (eps 0.2), advantage +1 or -1:
    #   r=1.5, A=+1: min(1.5, 1.2) = 1.2 -> loss -1.2, clipped;  r=1.5, A=-1: min(-1.5, -1.2) = -1.5 -> 1.5, not
    #   r=0.5, A=+1: min(0.5, 0.8) = 0.5 -> loss -0.5, not;      r=0.5, A=-1: min(-0.5, -0.8) = -0.8 -> 0.8, clipped
    old = torch.zeros(4, 1)
    logps = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]]))
    loss, clipped = clipped_policy_loss(logps, old, torch.tensor([1.0, -1.0, 1.0, -1.0]), epsilon=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2], [1.5], [-0.5], [0.8]]))
    assert clipped.flatten().tolist() == [True, False, False, True]
    # the first pass (old = logp detached): ratio 1, and the gradient is the policy gradient -A * grad logp
    logps = torch.tensor([[-0.3, -1.2]], requires_grad=True)
    loss, _ = clipped_policy_loss(logps, logps.detach(), torch.tensor([2.0]))
    loss.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-2.0, -2.0]]))


def test_clip_higher_lets_a_positive_advantage_raise_the_ratio_further():
    # eps_low 0.2, eps_high 0.28 (DAPO): r=1.25, A=+1: min(1.25, 1.25) -> -1.25, not clipped (symmetric: -1.2);
    # r=1.5, A=+1: clip at 1.28 -> -1.28; r=0.75, A=-1: the lower range is unchanged, min(-0.75, -0.8) -> 0.8
    old = torch.zeros(3, 1)
    logps = torch.log(torch.tensor([[1.25], [1.5], [0.75]]))
    advantages = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = clipped_policy_loss(logps, old, advantages, epsilon=0.2, epsilon_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-1.25], [-1.28], [0.8]]))
    assert clipped.flatten().tolist() == [False, True, True]
    symmetric, _ = clipped_policy_loss(logps, old, advantages, epsilon=0.2)
    torch.testing.assert_close(symmetric, torch.tensor([[-1.2], [-1.2], [0.8]]))


def test_clipped_policy_loss_takes_per_token_advantages():
    # PPO's GAE advantages, one per token: ratios 1 and 1.5 (eps 0.2); A = +1: -1 and -1.2 (clipped); A = -1 at
    # ratio 1.5: min(-1.5, -1.2) = -1.5 -> 1.5, not clipped
    logps, old = torch.log(torch.tensor([[1.0, 1.5]])), torch.zeros(1, 2)
    loss, clipped = clipped_policy_loss(logps, old, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(loss, torch.tensor([[-1.0, -1.2]]))
    assert clipped.tolist() == [[False, True]]
    loss, clipped = clipped_policy_loss(logps, old, torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(loss, torch.tensor([[-1.0, 1.5]]))
    assert clipped.tolist() == [[False, False]]


def test_kl_penalized_rewards_put_the_score_on_the_last_completion_token():
    # beta 0.1; row 0: completion at 1..3, logp - ref = 0.5, -1, 0 -> -0.05, 0.1, 0, plus the score 1 at t=3;
    # row 1: completion at 1..2 (then padding), logp - ref = 0, 2 -> 0, -0.2, plus the score 2 at t=2
    logps = torch.tensor([[9.0, -1.0, -2.0, -0.5], [9.0, -1.0, -1.0, 9.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, -0.5], [0.0, -1.0, -3.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]]).bool()
    rewards = kl_penalized_rewards(torch.tensor([1.0, 2.0]), logps, ref, mask, beta=0.1)
    torch.testing.assert_close(rewards, torch.tensor([[0.0, -0.05, 0.1, 1.0], [0.0, 0.0, 1.8, 0.0]]))


def test_gae_advantages_and_returns_by_hand():
    # gamma 0.9, lam 0.5 (gamma * lam = 0.45); V after the last completion token is 0
    # row 0 (tokens 1..3): t3: 1 - 0.3 = 0.7; t2: -0.2 + 0.9*0.3 - 0.4 = -0.33, + 0.45*0.7 = -0.015;
    #   t1: 0.1 + 0.9*0.4 - 0.5 = -0.04, + 0.45*(-0.015) = -0.04675
    # row 1 (tokens 1..2, then padding whose value 9 is ignored): t2: 2 - 0.5 = 1.5; t1: 0.9*0.5 - 1 + 0.45*1.5 = 0.125
    rewards = torch.tensor([[0.0, 0.1, -0.2, 1.0], [0.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[5.0, 0.5, 0.4, 0.3], [0.0, 1.0, 0.5, 9.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]]).bool()
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.0, -0.04675, -0.015, 0.7], [0.0, 0.125, 1.5, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.0, 0.45325, 0.385, 1.0], [0.0, 1.125, 2.0, 0.0]]))
    # lam = 1, gamma = 1: the return is the sum of the rewards to go, whatever the values
    _, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[0.0, 0.9, 0.8, 1.0], [0.0, 2.0, 2.0, 0.0]]))


def test_whiten_clipped_value_loss_and_explained_variance_by_hand():
    # masked values 1, 2, 3: mean 2, unbiased variance 1; the unmasked 100 is left out (and set to 0)
    whitened = whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]).bool())
    torch.testing.assert_close(whitened, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    # V_old 0.5, clip 0.2: V=1 -> clipped 0.7, max((1-2)^2, (0.7-2)^2) = 1.69 -> 0.845 (the clipped term);
    # V=0 -> clipped 0.3, max(1, 0.49) -> 0.5; V=2 -> clipped 0.7, max(4, 0.49) -> 2
    loss, clipped = clipped_value_loss(
        torch.tensor([[1.0, 0.0, 2.0]]), torch.full((1, 3), 0.5), torch.tensor([[2.0, 1.0, 0.0]]), clip=0.2
    )
    torch.testing.assert_close(loss, torch.tensor([[0.845, 0.5, 2.0]]))
    assert clipped.tolist() == [[True, False, False]]
    # R = 1..4, V = 1, 2, 3, 3: Var(R - V) = Var(0, 0, 0, 1) = 0.25, Var(R) = 5/3: 1 - 0.25 / (5/3) = 0.85
    returns, values = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[1.0, 2.0, 3.0, 3.0]])
    torch.testing.assert_close(explained_variance(values, returns, torch.ones(1, 4).bool()), torch.tensor(0.85))

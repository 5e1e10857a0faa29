"""Preference losses against hand computations: reward model, DPO family, SimPO, ORPO, completion log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from lit_ft.losses import (
    completion_logps,
    dpo_loss,
    orpo_loss,
    per_sequence_sum,
    reward_loss,
    simpo_loss,
    token_cross_entropy,
)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_completion_logps_sum_and_average_cover_completion_tokens_only():
    # vocabulary of 2; position t predicts label t + 1; the prompt token (label -100) and padding do not count
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [1.0, 3.0], [9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, 0, -100]])
    first = math.log(0.5)  # uniform, target 1
    second = 2 - math.log(math.exp(2) + 1)  # logits [2, 0], target 0
    per_token, mask = token_cross_entropy(logits, labels)
    torch.testing.assert_close(completion_logps(per_token, mask), torch.tensor([first + second]))
    torch.testing.assert_close(completion_logps(per_token, mask, average=True), torch.tensor([(first + second) / 2]))


def test_reward_loss_bradley_terry_margin_and_centering():
    chosen, rejected = t(1.0, -0.5), t(0.0, 0.5)
    torch.testing.assert_close(reward_loss(chosen, rejected), t(-logsig(1.0), -logsig(-1.0)))
    with_margin = reward_loss(chosen, rejected, margin=t(0.5, 0.0))
    torch.testing.assert_close(with_margin, t(-logsig(0.5), -logsig(-1.0)))
    centred = reward_loss(chosen, rejected, center_rewards_coefficient=0.1)
    torch.testing.assert_close(centred, t(-logsig(1.0) + 0.1 * 1.0**2, -logsig(-1.0) + 0.1 * 0.0**2))
    # the batch loss of the issue: mean of BT terms plus c * mean((r_c + r_r)^2)
    assert centred.mean().item() == pytest.approx((-logsig(1.0) - logsig(-1.0)) / 2 + 0.1 * (1.0 + 0.0) / 2)


def test_dpo_loss_at_step_zero_is_log_2():
    policy_chosen, policy_rejected = t(-12.3, -40.0), t(-15.0, -2.5)
    losses, chosen_rewards, rejected_rewards = dpo_loss(policy_chosen, policy_rejected, policy_chosen, policy_rejected)
    torch.testing.assert_close(losses, t(math.log(2), math.log(2)))
    assert chosen_rewards.abs().sum() == 0 and rejected_rewards.abs().sum() == 0


# policy log-ratio 2 - (-1) = 3 ... reference log-ratio -1 - (-2) = 1, so h = 2; beta = 0.5 -> beta h = 1
PAIR = (t(-2.0), t(-5.0), t(-1.0), t(-2.0))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"loss_type": "sigmoid"}, -logsig(1.0)),
        ({"loss_type": "sigmoid", "label_smoothing": 0.1}, -0.9 * logsig(1.0) - 0.1 * logsig(-1.0)),
        ({"loss_type": "robust", "label_smoothing": 0.1}, (-0.9 * logsig(1.0) + 0.1 * logsig(-1.0)) / 0.8),
        ({"loss_type": "hinge"}, 0.0),  # max(0, 1 - 1)
        ({"loss_type": "ipo"}, (2.0 - 1.0) ** 2),  # (h - 1 / (2 * 0.5))^2
    ],
)
def test_dpo_loss_types_match_hand_computation(kwargs, expected):
    losses, chosen_rewards, rejected_rewards = dpo_loss(*PAIR, beta=0.5, **kwargs)
    assert losses.item() == pytest.approx(expected)
    assert chosen_rewards.item() == pytest.approx(0.5 * (-2.0 + 1.0))
    assert rejected_rewards.item() == pytest.approx(0.5 * (-5.0 + 2.0))


def test_dpo_hinge_is_linear_below_the_margin_and_gradients_flow():
    policy_chosen = t(-2.0).requires_grad_()
    losses, _, _ = dpo_loss(policy_chosen, t(-2.0), t(-2.0), t(-2.0), beta=0.25, loss_type="hinge")
    losses.sum().backward()
    assert losses.item() == pytest.approx(1.0) and policy_chosen.grad.item() == pytest.approx(-0.25)


def test_dpo_loss_rejects_a_loss_type_it_does_not_compute():
    # SimPO and ORPO have their own functions; DPOModule refuses an unknown loss_type (and label_smoothing outside
    # [0, 0.5) or with hinge/ipo) when it is built: test_preference_modules.py
    with pytest.raises(ValueError, match="unknown DPO loss_type 'simpo'"):
        dpo_loss(*PAIR, loss_type="simpo")


def test_simpo_loss_matches_hand_computation():
    # average log-probs -0.5 and -1.5: beta * 1.0 - gamma = 2 - 1.5 = 0.5
    losses, chosen_rewards, rejected_rewards = simpo_loss(t(-0.5), t(-1.5), beta=2.0, gamma=1.5)
    assert losses.item() == pytest.approx(-logsig(0.5))
    assert (chosen_rewards.item(), rejected_rewards.item()) == (-1.0, -3.0)
    smoothed, _, _ = simpo_loss(t(-0.5), t(-1.5), beta=2.0, gamma=1.5, label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(-0.8 * logsig(0.5) - 0.2 * logsig(-0.5))


def test_orpo_loss_matches_hand_computation():
    chosen, rejected = math.log(0.5), math.log(0.2)  # odds 1 and 0.25
    losses, chosen_rewards, _ = orpo_loss(t(chosen), t(rejected), beta=0.1)
    expected = -chosen - 0.1 * logsig(math.log(1.0) - math.log(0.25))
    assert losses.item() == pytest.approx(expected)
    assert chosen_rewards.item() == pytest.approx(0.1 * chosen)
    # a certain completion (log p = 0) keeps a finite loss
    assert torch.isfinite(orpo_loss(t(0.0), t(-1.0))[0]).all()


def test_per_sequence_sums_of_a_row_of_sequences_leave_the_padding_run_out():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    ids = torch.tensor([[0, 0, 1, 1, 1, 2]])  # two sequences, then a padding run (id 2)
    torch.testing.assert_close(per_sequence_sum(values, ids, sequences=2), torch.tensor([3.0, 12.0]))
    torch.testing.assert_close(per_sequence_sum(values), torch.tensor([21.0]))  # no ids: one sequence a row
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(
        completion_logps(values, mask, average=True, sequence_ids=ids, sequences=2), torch.tensor([-2.0, -4.5])
    )
    with pytest.raises(ValueError, match="number of sequences"):
        per_sequence_sum(values, ids)

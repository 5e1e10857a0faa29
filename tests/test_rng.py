"""ResumableRNG: the generators saved in a checkpoint are set back at the first step after loading, once."""

from __future__ import annotations

import random

import numpy as np
import torch

from lit_ft.utils.rng import ResumableRNG


def draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_the_draws_after_a_resume_are_those_the_saved_run_made_next():
    checkpoint: dict = {}
    ResumableRNG().save(checkpoint)
    expected = draws()  # what the interrupted run drew after saving

    resumed = ResumableRNG()
    resumed.load(checkpoint)
    draws()  # loaders built, first prefetch: draws between loading and the first step
    resumed.restore_if_pending()
    python, numpy, torch_draw = draws()
    assert (python, numpy) == expected[:2] and torch.equal(torch_draw, expected[2])

    resumed.restore_if_pending()  # once only: later steps keep drawing on
    assert draws()[0] != expected[0]


def test_a_checkpoint_without_states_leaves_the_generators_alone():
    rng = ResumableRNG()
    rng.load({})
    torch.manual_seed(5)
    rng.restore_if_pending()
    after = torch.rand(2)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(2))

"""Shared-prompt rollouts for online RL (``module.shared_prompt``, grpo/rloo): the layout against a hand-built one,
equality with the padded layout (log-probs, reference log-probs, loss, per-completion metrics, gradients), that no
completion sees another, and the refusal of an attention that cannot run it. The ``train.py`` runs in both layouts
are in tests/test_rl.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lit_ft.data.batch import IGNORE_INDEX as X
from lit_ft.data.rollouts import rollout_batch
from lit_ft.losses import per_sequence_sum, shift_labels, token_cross_entropy
from lit_ft.models import SDPA_VARLEN, tiny_llama
from lit_ft.models.adapters import LoRA
from lit_ft.modules.rl import RLModule
from tests.support.helpers import assert_close_at_scale, run_entry_point
from tests.test_preference_modules import nudge_adapter

# B = 3 prompts (the last of one token: its branches start new sequences) x G = 3 completions, of 1 to 4 tokens
PROMPTS = [[11, 12, 13, 14, 15, 16, 17], [21, 22, 23, 24, 25], [31]]
COMPLETIONS = [[41, 42, 43], [44], [45, 46, 47, 48], [51, 52], [53, 54, 55], [56], [61, 62], [63, 64, 65], [66]]
TASKS = [0, 1, 0]
REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.2, 0.0, 0.7])


def test_a_group_is_its_prompt_once_then_one_branch_per_completion():
    batch = rollout_batch(PROMPTS[:2], COMPLETIONS[:6], TASKS[:2], pad_id=0, shared_prompt=True)
    n = 6  # no completion
    # group 0: prompt (7) + c0 (3), branch [17] + c1, branch [17] + c2 at positions 6..; group 1 from position 0
    assert batch["input_ids"].tolist() == [[*PROMPTS[0], 41, 42, 43, 17, 44, 17, 45, 46, 47, 48,
                                            *PROMPTS[1], 51, 52, 25, 53, 54, 55, 25, 56]]  # fmt: skip
    assert batch["position_ids"].tolist() == [[*range(10), 6, 7, 6, 7, 8, 9, 10, *range(7), 4, 5, 6, 7, 4, 5]]
    assert batch["labels"].tolist() == [[X] * 7 + [41, 42, 43, X, 44, X, 45, 46, 47, 48]
                                        + [X] * 5 + [51, 52, X, 53, 54, 55, X, 56]]  # fmt: skip
    assert batch["completion_index"].tolist() == [[n] * 7 + [0] * 3 + [n, 1, n] + [2] * 4
                                                  + [n] * 5 + [3] * 2 + [n] + [4] * 3 + [n, 5]]  # fmt: skip
    assert batch["task_ids"].tolist() == [[0] * 17 + [1] * 13] and "attention_mask" not in batch
    padded = rollout_batch(PROMPTS[:2], COMPLETIONS[:6], TASKS[:2], pad_id=0, shared_prompt=False)
    assert padded["input_ids"].shape == (6, 11) and padded["attention_mask"][1].tolist() == [1] * 8 + [0] * 3
    assert padded["completion_index"][3].tolist() == [n] * 5 + [3, 3] + [n] * 4  # prompt 1, c3, padding
    assert batch["input_ids"].numel() == 30 < int(padded["attention_mask"].sum()) == 50  # each prompt runs once


def rl_module(tokenizer, shared_prompt: bool, head_on_loss_tokens: bool = True) -> RLModule:
    """An RLModule (GRPO, LoRA, adapter-disabled reference, two passes per rollouts) on the tiny model, with the
    stand-ins for the trainer a training step reads (one process, no accumulation; logging off)."""
    module = RLModule(
        model=lambda: tiny_llama(tokenizer, seed=0, attn_implementation=SDPA_VARLEN),
        adapter=LoRA(r=4, alpha=8, dropout=0.0),
        reward=lambda rollouts: None,
        group_size=3,
        num_iterations=2,
        beta=0.1,
        shared_prompt=shared_prompt,
        head_on_loss_tokens=head_on_loss_tokens,
    )
    module.configure_model()
    nudge_adapter(module)  # the policy away from the reference: a non-zero KL
    module.trainer = SimpleNamespace(
        accumulate_grad_batches=1, world_size=1, strategy=SimpleNamespace(handles_gradient_accumulation=False)
    )
    module.log = lambda *args, **kwargs: None
    return module


def first_pass(module: RLModule) -> tuple[dict, dict, dict]:
    """The first training step on the fixed rollouts: its output, the rollouts with what it computed, the grads."""
    batch = rollout_batch(PROMPTS, COMPLETIONS, TASKS, pad_id=0, shared_prompt=module.shared_prompt)
    module.rollouts = {**batch, "rewards": REWARDS, "example_task_ids": torch.tensor(TASKS).repeat_interleave(3),
                       "truncated": torch.tensor(0.0)}  # fmt: skip
    module.model.eval()  # dropout off, as the padded and shared forwards must see the same weights
    out = module.training_step({}, 0)
    out["loss"].backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return out, module.rollouts, grads


def completion_tokens(values: torch.Tensor, rollouts: dict) -> torch.Tensor:
    """A per-token quantity at the completion tokens, in completion order (the same in both layouts)."""
    return values[shift_labels(rollouts["labels"]) != X]


@pytest.mark.parametrize("head_on_loss_tokens", [True, False])  # False: full logits, the path FSDP2 takes
def test_shared_prompt_rollouts_equal_padded_ones(tokenizer, head_on_loss_tokens):
    (padded, padded_rollouts, padded_grads), (shared, shared_rollouts, shared_grads) = (
        first_pass(rl_module(tokenizer, shared, head_on_loss_tokens)) for shared in (False, True)
    )
    assert shared_rollouts["input_ids"].shape[0] == 1 and padded_rollouts["input_ids"].shape[0] == 9
    close = {"rtol": 1e-5, "atol": 1e-6}
    for key in ("old_logps", "ref_logps", "advantages"):
        want, got = (completion_tokens(r[key], r) for r in (padded_rollouts, shared_rollouts))
        assert want.numel() == sum(map(len, COMPLETIONS)) == 20
        torch.testing.assert_close(got, want, **close, msg=key)
    # the reference differs from the policy (the adapter is nudged): the KL term is exercised
    assert (
        completion_tokens(padded_rollouts["old_logps"] - padded_rollouts["ref_logps"], padded_rollouts)
    ).abs().max() > 1e-3
    # per-completion log-probs: summed through completion_index, against the padded rows' sums
    logps = [per_sequence_sum(r["old_logps"] * (shift_labels(r["labels"]) != X), shift_labels(r["completion_index"]), 9)
             for r in (padded_rollouts, shared_rollouts)]  # fmt: skip
    torch.testing.assert_close(logps[1], logps[0], **close)
    torch.testing.assert_close(logps[0], padded_rollouts["old_logps"].sum(-1), **close)  # one row each
    torch.testing.assert_close(shared["loss"], padded["loss"], **close)
    torch.testing.assert_close(shared["per_token_loss"].sum(), padded["per_token_loss"].sum(), **close)
    torch.testing.assert_close(shared["example_metrics"]["kl"], padded["example_metrics"]["kl"], **close)
    assert shared["example_task_ids"].tolist() == padded["example_task_ids"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert shared["loss_mask"].sum() == padded["loss_mask"].sum() == 20
    assert shared_grads.keys() == padded_grads.keys() and shared_grads
    for name, grad in padded_grads.items():
        assert grad.abs().max() > 0, name
        assert_close_at_scale(shared_grads[name], grad, msg=name)


def test_no_completion_sees_another_completion(tokenizer):
    """Replacing the tokens of one completion (the one inside the prompt's trunk, then a branch) changes its own
    log-probs and leaves every other completion's bit for bit unchanged."""
    model = tiny_llama(tokenizer, seed=0, attn_implementation=SDPA_VARLEN).eval()

    def logps(completions: list[list[int]]) -> torch.Tensor:
        batch = rollout_batch(PROMPTS, completions, TASKS, pad_id=0, shared_prompt=True)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        loss, mask = token_cross_entropy(logits, batch["labels"])
        return per_sequence_sum(-loss * mask, shift_labels(batch["completion_index"]), len(completions))

    before = logps(COMPLETIONS)
    for changed in (0, 1, 5):  # group 0's trunk completion, its first branch, group 1's last branch
        completions = [list(c) for c in COMPLETIONS]
        completions[changed] = [100 + 7 * t for t in completions[changed]]
        after = logps(completions)
        others = [i for i in range(len(COMPLETIONS)) if i != changed]
        assert torch.equal(after[others], before[others]), changed
        assert (after[changed] - before[changed]).abs() > 1e-4, changed


def test_shared_prompt_with_an_attention_that_cannot_run_it_is_refused(tmp_path):
    result = run_entry_point(
        ["experiment=rl_legal", "debug=tiny", f"paths.output_dir={tmp_path}", "module.shared_prompt=true"], check=False
    )  # debug=tiny's model has plain sdpa, which would cut each branch off its prompt
    assert result.returncode != 0
    assert "module.shared_prompt=true with model.attn_implementation=sdpa" in result.stderr + result.stdout


def test_the_default_follows_the_models_attention(tokenizer):
    """``shared_prompt=None`` (the config's default): on with sdpa_varlen, off with any other attention; ``True``
    with another attention is refused; ppo never shares."""

    def configured(attention: str, **options) -> RLModule:
        module = RLModule(model=lambda: tiny_llama(tokenizer, attn_implementation=attention), reward=lambda r: None,
                          reference="copy", **options)  # fmt: skip
        module.configure_model()
        return module

    assert configured(SDPA_VARLEN).shared_prompt is True and configured("sdpa").shared_prompt is False
    assert configured(SDPA_VARLEN, loss_type="ppo", shared_prompt=True).shared_prompt is False
    with pytest.raises(ValueError, match="shared_prompt=true with attention sdpa: only sdpa_varlen"):
        configured("sdpa", shared_prompt=True)

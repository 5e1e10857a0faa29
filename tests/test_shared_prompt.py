"""Shared-prompt pairs (``data.shared_prompt``): the layout, the attention's branches, and that the rejected answer
never sees the chosen one. Equality with padded pairs (DPO per reference, the reward model) and the ``train.py``
run are in tests/test_preference_modules.py (``ONE_ROW_LAYOUTS``)."""

from __future__ import annotations

import copy

import pytest
import torch

from lit_ft.data import PairCollator, PreferenceDataModule
from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.shared_prompt import shared_length
from lit_ft.models import SDPA_VARLEN, tiny_llama
from lit_ft.models.attention import row_segments
from lit_ft.modules import DPOModule, RewardModelModule
from tests.conftest import write_jsonl
from tests.test_preference_modules import toy_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tokenizer) -> list[dict]:
    folder = tmp_path_factory.mktemp("shared")
    files = write_jsonl(folder / "train.jsonl", toy_pairs(4, 0)), write_jsonl(folder / "val.jsonl", toy_pairs(2, 1))
    dm = PreferenceDataModule(tokenizer, *files, batch_size=4)
    dm.setup("fit")
    return list(dm.train_examples)


def test_segments_read_branches_from_the_positions():
    #            example 1: trunk of 6, a branch from position 3  | example 2 | padding run
    positions = [0, 1, 2, 3, 4, 5, 3, 4, 5, 6] + [0, 1, 2, 1, 2] + [0, 1]
    assert row_segments(positions) == [
        (0, 6, 0, 0),
        (6, 10, 0, 3),
        (10, 13, 10, 10),
        (13, 15, 10, 11),
        (15, 17, 15, 15),
    ]
    assert row_segments([0, 1, 2, 0, 1]) == [(0, 3, 0, 0), (3, 5, 3, 3)]  # packing: restarts only
    with pytest.raises(ValueError, match="past the end of its example's first run of 3 tokens"):
        row_segments([0, 1, 2, 4, 5])


def test_each_pair_is_its_prompt_then_both_answers(tokenizer, pairs):
    batch = PairCollator(tokenizer.pad_token_id, shared_prompt=True)(pairs)
    flat = PairCollator(tokenizer.pad_token_id, padding_free=True)(pairs)
    ids, labels, positions = (batch[key][0].tolist() for key in ("input_ids", "labels", "position_ids"))
    sides, ends, offset = batch["sequence_ids"][0].tolist(), batch["sequence_ends"].tolist(), 0
    for i, pair in enumerate(pairs):
        chosen, rejected, trunk = pair["chosen"], pair["rejected"], shared_length(pair)
        # the trunk is the shared prompt less its last token: most of the prompt, and no answer token
        first_answer = rejected["labels"].index(next(x for x in rejected["labels"] if x != IGNORE_INDEX))
        assert 30 < trunk == first_answer - 1 and chosen["input_ids"][: trunk + 1] == rejected["input_ids"][: trunk + 1]
        c, r = len(chosen["input_ids"]), len(rejected["input_ids"]) - trunk
        assert ids[offset : offset + c + r] == chosen["input_ids"] + rejected["input_ids"][trunk:]
        assert positions[offset : offset + c + r] == list(range(c)) + list(range(trunk, trunk + r))
        assert labels[offset + c] == IGNORE_INDEX  # the chosen answer's last token predicts nothing
        assert labels[offset + 1 : offset + c + r] == chosen["labels"][1:] + rejected["labels"][trunk:]
        assert sides[offset : offset + c + r] == [i] * c + [len(pairs) + i] * r
        assert (ends[i], ends[len(pairs) + i]) == (offset + c - 1, offset + c + r - 1)
        offset += c + r
    assert len(ids) == offset and "cu_seq_lens_q" not in batch  # no varlen arguments for flash attention to misread
    assert len(ids) < 0.7 * flat["input_ids"].shape[1]  # each prompt runs once
    assert batch["example_index"].tolist() == flat["example_index"].tolist()
    assert torch.equal(batch["margin"], flat["margin"])


def test_the_rejected_branch_attends_to_the_prompt_and_itself(tokenizer, pairs, monkeypatch):
    """sdpa_varlen's calls on one shared-prompt sequence: the trunk and chosen answer causally, then the rejected
    answer's queries against the trunk's keys and its own, under the causal mask aligned to its end."""
    import transformers.integrations.sdpa_attention as sdpa_module

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape[2], key.shape[2], attn_mask))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(sdpa_module.torch.nn.functional, "scaled_dot_product_attention", spy)
    pair = pairs[0]
    batch = PairCollator(tokenizer.pad_token_id, shared_prompt=True)([pair])
    tiny_llama(tokenizer, num_layers=1, attn_implementation=SDPA_VARLEN)(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"]
    )
    trunk, c = shared_length(pair), len(pair["chosen"]["input_ids"])
    r = len(pair["rejected"]["input_ids"]) - trunk
    (chosen_q, chosen_k, chosen_mask), (rejected_q, rejected_k, rejected_mask) = calls
    assert (chosen_q, chosen_k, chosen_mask) == (c, c, None)
    assert (rejected_q, rejected_k) == (r, trunk + r)
    expected = torch.zeros(r, trunk + r, dtype=torch.bool)
    for q in range(r):  # query q of the branch sits at position trunk + q
        expected[q, :trunk] = True
        expected[q, trunk : trunk + q + 1] = True
    assert torch.equal(rejected_mask, expected)


def perturb_chosen_answers(pairs: list[dict]) -> list[dict]:
    """Each pair with every token of its chosen answer (after the shared prompt) replaced, labels to match."""
    out = copy.deepcopy(pairs)
    for pair in out:
        chosen, start = pair["chosen"], shared_length(pair) + 1
        for t in range(start, len(chosen["input_ids"])):
            chosen["input_ids"][t] = 100 + (chosen["input_ids"][t] * 7) % 5000
            if chosen["labels"][t] != IGNORE_INDEX:
                chosen["labels"][t] = chosen["input_ids"][t]
    return out


def test_no_rejected_answer_token_sees_the_chosen_answer(tokenizer, pairs):
    """Replacing every chosen-answer token leaves the rejected answers' log-probs and rewards bit for bit unchanged
    (and changes the chosen ones): nothing flows from a chosen answer into its rejected one."""
    collate = PairCollator(tokenizer.pad_token_id, shared_prompt=True)
    batch, perturbed = collate(pairs), collate(perturb_chosen_answers(pairs))
    assert batch["input_ids"].shape == perturbed["input_ids"].shape and not torch.equal(
        batch["input_ids"], perturbed["input_ids"]
    )
    dpo = DPOModule(
        model=lambda: tiny_llama(tokenizer, seed=0, attn_implementation=SDPA_VARLEN),
    )
    reward = RewardModelModule(
        model=lambda head: tiny_llama(tokenizer, seed=0, head=head, attn_implementation=SDPA_VARLEN),
    )
    with torch.no_grad():
        for module, score in ((dpo, dpo.logps), (reward, reward.rewards)):
            module.configure_model()
            module.eval()
            (chosen, rejected), (chosen_after, rejected_after) = score(batch).chunk(2), score(perturbed).chunk(2)
            assert torch.equal(rejected_after, rejected), type(module).__name__
            assert (chosen_after - chosen).abs().min() > 1e-4, type(module).__name__

"""Padding-free batches and length-grouped sampling: the same examples and losses with less padding."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from lit_ft.data import Collator, PairCollator, SFTDataModule
from lit_ft.data.batch import pair_count, sequence_ids, sequence_task_ids
from lit_ft.data.packing import concatenate_examples
from lit_ft.data.sampler import LengthGroupedSampler
from lit_ft.losses import token_cross_entropy
from lit_ft.models import SDPA_VARLEN, tiny_llama
from lit_ft.models.attention import VARLEN_KEYS
from tests.conftest import chat, write_jsonl
from tests.support.helpers import assert_close_at_scale


def random_examples(lengths, seed=0, vocab=(10, 1000)):
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for n in lengths:
        ids = torch.randint(*vocab, (n,), generator=generator).tolist()
        labels = [-100] * (n // 2) + ids[n // 2 :]  # a prompt without loss, then an answer
        examples.append({"input_ids": ids, "labels": labels, "task_ids": [len(examples) % 2] * n})
    return examples


def test_concatenation_restarts_positions_and_never_targets_a_first_token():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [5, 6, 7], "task_ids": [0, 0, 0]},  # text: every token labelled
        {"input_ids": [8, 9], "labels": [8, 9], "task_ids": [1, 1]},
    ]
    flat = concatenate_examples(examples)
    assert flat["input_ids"] == [5, 6, 7, 8, 9]
    assert flat["position_ids"] == [0, 1, 2, 0, 1]
    assert flat["labels"] == [-100, 6, 7, -100, 9]  # 8 is not predicted from 7, as in a padded batch
    assert flat["task_ids"] == [0, 0, 0, 1, 1]


def test_padding_free_batch_has_the_padded_batch_tokens_and_no_padding(tokenizer):
    examples = random_examples([5, 9, 3])
    padded = Collator(tokenizer.pad_token_id)(examples)
    flat = Collator(tokenizer.pad_token_id, padding_free=True)(examples)
    assert flat["input_ids"].shape == (1, 17) and "attention_mask" not in flat
    assert flat["input_ids"][0].tolist() == padded["input_ids"][padded["attention_mask"] == 1].tolist()
    assert (flat["task_ids"] != -1).sum() == padded["attention_mask"].sum()
    assert (flat["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()
    padded_to_8 = Collator(tokenizer.pad_token_id, pad_to_multiple_of=8, padding_free=True)(examples)
    assert padded_to_8["input_ids"].shape == (1, 24) and (padded_to_8["task_ids"] == -1).sum() == 7


@pytest.mark.parametrize("attn_implementation", ["sdpa", SDPA_VARLEN])
def test_padding_free_loss_and_gradients_equal_padded(tokenizer, attn_implementation):
    """The whole point: no compute on padding, and still exactly the padded batch's loss and gradients."""
    tiny_model = tiny_llama(tokenizer, attn_implementation=attn_implementation)
    examples = random_examples([6, 14, 9, 4], seed=3)

    def loss_and_grads(batch):
        tiny_model.zero_grad()
        # a padding-free batch's varlen arguments go in too: sdpa and sdpa_varlen must run with them present
        inputs = {k: batch.get(k) for k in ("input_ids", "attention_mask", "position_ids", *VARLEN_KEYS) if k in batch}
        per_token, mask = token_cross_entropy(tiny_model(**inputs, use_cache=False).logits, batch["labels"])
        loss = (per_token * mask).sum() / mask.sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in tiny_model.parameters()]

    padded_loss, padded_grads = loss_and_grads(Collator(tokenizer.pad_token_id)(examples))
    flat_loss, flat_grads = loss_and_grads(Collator(tokenizer.pad_token_id, padding_free=True)(examples))
    torch.testing.assert_close(flat_loss, padded_loss, atol=1e-6, rtol=1e-5)
    for flat, padded in zip(flat_grads, padded_grads):
        assert_close_at_scale(flat, padded)


@pytest.mark.parametrize(("multiple", "offsets"), [(None, [0, 5, 14, 17]), (8, [0, 5, 14, 17, 24])])
def test_padding_free_batches_carry_the_varlen_arguments_transformers_derives(tokenizer, multiple, offsets):
    """Flash attention's cu_seq_lens and max_length, computed by the collator on the host, equal what transformers
    derives from position_ids on the device; the padding after the row (pad_to_multiple_of) is a segment there too."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    batch = Collator(tokenizer.pad_token_id, multiple, padding_free=True)(random_examples([5, 9, 3]))
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert set(VARLEN_KEYS) <= set(batch) and batch["cu_seq_lens_q"].tolist() == offsets
    for ours, theirs in ((batch["cu_seq_lens_q"], cu_q), (batch["cu_seq_lens_k"], cu_k)):
        assert ours.dtype == theirs.dtype == torch.int32 and torch.equal(ours, theirs)
    assert batch["max_length_q"] == batch["max_length_k"] == int(max_q) == int(max_k) == 9
    assert not set(VARLEN_KEYS) & set(Collator(tokenizer.pad_token_id)(random_examples([5, 9])))  # padded: none


def test_padding_free_pairs_are_the_padded_sequences_back_to_back(tokenizer):
    """2B sequences in the padded batch's order (chosen, then rejected), one segment each, same pair fields."""
    pairs = []
    for i, (chosen, rejected) in enumerate(((4, 6), (7, 3), (5, 5))):
        sides = random_examples([chosen, rejected], seed=i)
        pairs.append({"chosen": sides[0], "rejected": sides[1], "task_id": i % 2, "margin": i or None})
        pairs[-1]["example_index"] = 10 + i
    padded = PairCollator(tokenizer.pad_token_id)(pairs)
    flat = PairCollator(tokenizer.pad_token_id, padding_free=True)(pairs)
    assert flat["input_ids"].shape == (1, 30) and "attention_mask" not in flat
    assert flat["input_ids"][0].tolist() == padded["input_ids"][padded["attention_mask"] == 1].tolist()
    assert flat["cu_seq_lens_q"].tolist() == [0, 4, 11, 16, 22, 25, 30]  # chosen 4, 7, 5; rejected 6, 3, 5
    assert sequence_ids(flat)[0].tolist() == [i for i, n in enumerate([4, 7, 5, 6, 3, 5]) for _ in range(n)]
    assert pair_count(flat) == pair_count(padded) == 3
    assert sequence_task_ids(flat).tolist() == sequence_task_ids(padded).tolist() == [0, 1, 0, 0, 1, 0]
    assert flat["margin"].tolist() == padded["margin"].tolist() == [0.0, 1.0, 2.0]
    assert flat["example_index"].tolist() == padded["example_index"].tolist() == [10, 11, 12]


def padding(lengths, order, batch_size):
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches)


def test_length_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    lengths = torch.randint(20, 250, (403,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthGroupedSampler(range(403), lengths, batch_size=4, seed=7)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(403)) and sorted(second) == list(range(403))
    assert first != second  # a new order each epoch
    sampler.set_epoch(0)
    assert list(sampler) == first  # ... that depends only on seed and epoch
    assert lengths[first[0]] == max(lengths)  # the longest batch first: out-of-memory shows at step 1
    shuffled = torch.randperm(403, generator=torch.Generator().manual_seed(1)).tolist()
    assert padding(lengths, first, 4) < 0.1 * padding(lengths, shuffled, 4)
    sampler.resume(0, 8)  # exact resume: the same order, without the samples already trained on
    assert list(sampler) == first[8:]


def test_length_groups_survive_sharding_over_ranks():
    """Under DDP each rank keeps its own share (a DistributedSampler, so Lightning does not replace it); each
    rank's i-th batch must come from the same length group, and the ranks together see every example once."""
    lengths = torch.randint(20, 250, (64,), generator=torch.Generator().manual_seed(2)).tolist()
    batch_size, ranks = 4, 2
    samplers = [LengthGroupedSampler(range(64), lengths, batch_size, num_replicas=ranks, rank=r) for r in range(2)]
    assert all(isinstance(s, DistributedSampler) for s in samplers)
    per_rank = [list(s) for s in samplers]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(64))
    order = samplers[0].global_order()
    groups = [set(order[i : i + batch_size * ranks]) for i in range(0, 64, batch_size * ranks)]
    for step, group in enumerate(groups):
        for rank in range(ranks):
            assert set(per_rank[rank][step * batch_size : (step + 1) * batch_size]) <= group


def test_datamodule_options_reach_the_loader(tokenizer, tmp_path):
    rows = [chat("q " * n, "a " * (n % 7 + 1)) for n in range(1, 41)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = SFTDataModule(tokenizer, train_files=path, val_ratio=0, batch_size=4, group_by_length=True, padding_free=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler) and loader.sampler.group_size == 4  # 4 x 1 rank
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch and "attention_mask" not in batch
    assert (batch["position_ids"] == 0).sum() == 4  # four examples back to back


def test_sdpa_varlen_validates_unpadded_batches_under_inference_mode(tokenizer):
    """Validation batches whose rows are all the same length (always so with eval_batch_size=1) have no padding
    mask, so the model makes its own position ids, as inference tensors, which carry no version counter."""
    model = tiny_llama(tokenizer, num_layers=1, attn_implementation=SDPA_VARLEN).eval()
    ids = torch.randint(5, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        varlen = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        model.config._attn_implementation = "sdpa"
        dense = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(varlen, dense, atol=1e-5, rtol=1e-4)


def test_sdpa_varlen_attends_per_example_without_a_dense_mask(tokenizer, monkeypatch):
    """Padding-free rows under ``sdpa_varlen``: causal sdpa on each example's segment, never a [T, T] mask."""
    import transformers.integrations.sdpa_attention as sdpa_module

    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape[2], attn_mask is None, kwargs.get("is_causal")))
        return sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(sdpa_module.torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny_llama(tokenizer, num_layers=1, attn_implementation=SDPA_VARLEN)
    examples = random_examples([6, 14, 9], seed=4)
    batch = Collator(tokenizer.pad_token_id, padding_free=True)(examples)
    varlen = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert calls == [(6, True, True), (14, True, True), (9, True, True)]
    model.config._attn_implementation = "sdpa"
    dense = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    assert calls[-1][:2] == (29, False)  # plain sdpa: one call over all 29 tokens with a block mask
    torch.testing.assert_close(varlen, dense, atol=1e-5, rtol=1e-4)

"""G completions per prompt from one prefill of each prompt: the same tokens and scores as generating from the
repeated prompts, at a fraction of the prompt's cost."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lit_ft.models import SDPA_VARLEN, tiny_llama
from lit_ft.models.group_generation import (
    cache_argument,
    generate_groups,
    generating_model,
    left_padded,
    padded_positions,
)


def test_left_padded_puts_the_padding_first_and_masks_it():
    ids, mask = left_padded([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_padded_positions_count_from_each_rows_first_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert padded_positions(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("attention", ["sdpa", SDPA_VARLEN])
@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize(
    "texts", [("A short one.", "A prompt a few tokens longer than that."), ("Same length here.", "Same length too.")]
)
def test_groups_are_what_generate_gives_the_repeated_prompts(tokenizer, attention, lora, do_sample, texts):
    model = tiny_llama(tokenizer, attn_implementation=attention).eval()
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    prompts = [tokenizer(text)["input_ids"] for text in texts]
    assert (len(set(map(len, prompts))) == 1) == (texts[0].startswith("Same"))  # one case without padding
    ids, mask = left_padded(prompts, tokenizer.pad_token_id)
    count = 3
    options = dict(max_new_tokens=6, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                   output_scores=True, return_dict_in_generate=True)  # fmt: skip
    torch.manual_seed(0)
    expected = model.generate(
        input_ids=ids.repeat_interleave(count, 0), attention_mask=mask.repeat_interleave(count, 0), **options
    )
    torch.manual_seed(0)
    got = generate_groups(model, ids, mask, count, **options)
    assert torch.equal(got.sequences, expected.sequences)
    for got_scores, expected_scores in zip(got.scores, expected.scores, strict=True):
        torch.testing.assert_close(got_scores, expected_scores, atol=1e-5, rtol=1e-5)


def test_each_prompt_runs_through_the_model_once(tokenizer):
    model = tiny_llama(tokenizer).eval()
    prompts = [tokenizer(text)["input_ids"] for text in ("One prompt here.", "And a second, longer prompt here.")]
    ids, mask = left_padded(prompts, tokenizer.pad_token_id)
    seen: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda _m, args, _out: seen.append(args[0].numel()))
    generate_groups(model, ids, mask, 4, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    rows, length = ids.shape
    # the prompts less their last token once, then the last token of each of the 8 rows, then 2 decoding steps
    assert seen == [rows * (length - 1), rows * 4, rows * 4, rows * 4]


def test_the_prefill_runs_the_module_generate_steps_with_a_cache_argument_it_takes(tokenizer):
    model = tiny_llama(tokenizer)
    assert cache_argument(model) in ("cache", "past_key_values")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert generating_model(peft_model) is model and generating_model(model) is model

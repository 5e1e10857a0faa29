"""The addmm LoRA forward (lit_ft/models/lora_addmm.py): the outputs and gradients of peft's forward, taken only
where it is exact, and peft's own forward everywhere else."""

from __future__ import annotations

import copy

import pytest
import torch
from peft.tuners.lora import layer as lora_layer

from lit_ft.models import LoRA
from lit_ft.models.lora_addmm import AddmmLoraLinear, use_addmm_lora
from tests.support.helpers import assert_close_at_scale

ADAPTED_PER_LAYER = 7  # q, k, v, o, gate, up, down


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with non-zero LoRA B weights, as after training (fresh B are zero and hide any error)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def addmm_layers(model: torch.nn.Module) -> list[AddmmLoraLinear]:
    return [m for m in model.modules() if isinstance(m, AddmmLoraLinear)]


def test_lora_uses_the_addmm_forward_by_default_and_peft_on_request(tiny_model):
    assert len(addmm_layers(LoRA(r=4)(copy.deepcopy(tiny_model)))) == 2 * ADAPTED_PER_LAYER
    assert addmm_layers(LoRA(r=4, addmm=False)(tiny_model)) == []


def test_addmm_forward_equals_peft_outputs_and_gradients(tiny_model, monkeypatch):
    theirs = trained_like(LoRA(r=4, alpha=8, dropout=0.0, addmm=False)(tiny_model))
    ours = copy.deepcopy(theirs)
    assert use_addmm_lora(ours) == 2 * ADAPTED_PER_LAYER
    ids = torch.randint(5, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    their_loss = theirs(input_ids=ids, labels=ids).loss
    their_loss.backward()

    def peft_forward(*args, **kwargs):
        raise AssertionError("the addmm path fell back to peft's forward")

    monkeypatch.setattr(lora_layer.Linear, "forward", peft_forward)  # ours must not need it
    our_loss = ours(input_ids=ids, labels=ids).loss
    our_loss.backward()
    torch.testing.assert_close(our_loss, their_loss, atol=1e-6, rtol=1e-6)
    grads = [(n, p.grad, q.grad) for (n, p), q in zip(theirs.named_parameters(), ours.parameters()) if p.requires_grad]
    assert len(grads) == 2 * 2 * ADAPTED_PER_LAYER
    for name, their_grad, our_grad in grads:
        assert our_grad is not None and their_grad.abs().sum() > 0, name
        assert_close_at_scale(our_grad, their_grad, msg=name)


@pytest.mark.parametrize(
    ("options", "context"),
    [
        ({"dropout": 0.1}, None),  # dropout draws a mask: peft's forward
        ({"use_dora": True}, None),  # a LoRA variant
        ({}, "disabled"),  # the adapter switched off (DPO's adapter reference)
        ({}, "merged"),
        ({}, "autocast"),
    ],
)
def test_peft_forward_runs_where_addmm_is_not_exact(tiny_model, options, context):
    model = trained_like(LoRA(r=4, alpha=8, **{"dropout": 0.0, **options})(tiny_model)).eval()
    layer = addmm_layers(model)[0]
    x = torch.randn(2, 5, layer.in_features)
    if context == "disabled":
        with model.disable_adapter():
            assert layer.addmm_adapter(x, (), {}) is None
            torch.testing.assert_close(layer(x), layer.base_layer(x))
        return
    if context == "merged":
        layer.merge()
        assert layer.addmm_adapter(x, (), {}) is None
        return
    if context == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer.addmm_adapter(x, (), {}) is None
        return
    assert layer.addmm_adapter(x, (), {}) is None
    plain = copy.deepcopy(layer)
    plain.__class__ = lora_layer.Linear
    torch.testing.assert_close(layer(x), plain(x))  # eval mode: dropout off, so both are deterministic


def test_addmm_path_is_taken_for_plain_lora_only_without_extra_arguments(tiny_model):
    layer = addmm_layers(LoRA(r=4, dropout=0.0)(tiny_model))[0]
    x = torch.randn(2, 5, layer.in_features)
    assert layer.addmm_adapter(x, (), {}) == "default"
    assert layer.addmm_adapter(x, (), {"adapter_names": ["default", "default"]}) is None
    assert layer.addmm_adapter(x.double(), (), {}) is None  # another dtype than the adapter's


def test_copies_keep_the_addmm_forward_and_merging_gives_plain_linears(tiny_model):
    model = trained_like(LoRA(r=4, dropout=0.0)(tiny_model)).eval()
    assert len(addmm_layers(copy.deepcopy(model))) == 2 * ADAPTED_PER_LAYER  # the DPO module's frozen copy
    ids = torch.randint(5, 1000, (1, 7))
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        assert addmm_layers(merged) == [] and type(merged.model.layers[0].self_attn.q_proj) is torch.nn.Linear
        torch.testing.assert_close(merged(input_ids=ids).logits, adapted, atol=1e-4, rtol=1e-4)

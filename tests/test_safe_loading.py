"""Safe loading: modelling code shipped with a checkpoint never runs unless the user sets trust_remote_code.

(Checkpoints load with ``weights_only=True`` and exports are safetensors: tests/test_resume.py.)"""

from __future__ import annotations

import json

import pytest

from lit_ft.models import load_model, load_tokenizer, tiny_llama
from tests.support.helpers import compose_config

REMOTE_CODE = """
from pathlib import Path
Path(__file__).with_name("CODE_RAN").write_text("x")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evil"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def test_code_shipped_with_a_model_does_not_run_unless_trusted(tmp_path, tokenizer):
    tiny_llama(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(
        model_type="evil", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "evil.py").write_text(REMOTE_CODE)
    with pytest.raises(OSError, match="ships its own modelling code.*set model.trust_remote_code=true only if"):
        load_model(tmp_path)
    assert not (tmp_path / "CODE_RAN").exists()
    load_tokenizer(tmp_path)  # the tokenizer is a plain one: loading it runs nothing either
    assert not (tmp_path / "CODE_RAN").exists()


def test_the_data_loads_its_tokenizer_as_trusted_as_the_model(tmp_path):
    assert compose_config([], tmp_path).data.trust_remote_code is False
    assert compose_config(["model.trust_remote_code=true"], tmp_path).data.trust_remote_code is True
    assert compose_config(["model=tiny"], tmp_path).data.trust_remote_code is False  # tiny has no such key

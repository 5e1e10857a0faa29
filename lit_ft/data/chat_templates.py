"""``data.chat_template``: the chat template the data is rendered with, by name, file or Jinja text.

It is set on a copy of the tokenizer the DataModule tokenises with. The model is exported with that tokenizer, so
its ``model/`` and ``adapter/`` folders carry the template it was trained with. Built-in templates are the
``templates/*.jinja`` files beside this module (package data), so a base model without a template of its own can
learn chat. A template only renders text: its markers (``<|im_start|>``, ``<|eot_id|>``, ...) are tokenised by the
tokenizer as it is, as single tokens only when the vocabulary has them (lit-ft never resizes the vocabulary).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

_BUILT_IN = resources.files("lit_ft.data") / "templates"
# Rendered once when a template is set, so a template that cannot render a plain exchange fails at start.
_PROBE = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]


def built_in_templates() -> list[str]:
    """Names of the shipped templates (``chatml``, ``llama3``, ``zephyr``, ...)."""
    return sorted(entry.name.removesuffix(".jinja") for entry in _BUILT_IN.iterdir() if entry.name.endswith(".jinja"))


def read_chat_template(spec: str) -> str:
    """The Jinja text ``spec`` stands for: a built-in name, Jinja text (it holds ``{{`` or ``{%``), or a file."""
    if spec in built_in_templates():
        return (_BUILT_IN / f"{spec}.jinja").read_text()
    if "{{" in spec or "{%" in spec:
        return spec
    if Path(spec).is_file():
        return Path(spec).read_text()
    raise ValueError(
        f"data.chat_template={spec!r} is not a built-in template ({', '.join(built_in_templates())}), Jinja text, "
        "or a file that exists"
    )


def with_chat_template(tokenizer: PreTrainedTokenizerBase, spec: str | None) -> PreTrainedTokenizerBase:
    """``tokenizer`` itself when ``spec`` is ``None``, else a copy of it with the template of ``spec`` (see
    :func:`read_chat_template`; the caller's tokenizer is left as it was), checked by rendering a short exchange."""
    if spec is None:
        return tokenizer
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = read_chat_template(spec)
    try:
        tokenizer.apply_chat_template(_PROBE, tokenize=False)
    except TemplateError as error:
        shown = spec if len(spec) < 80 else f"{spec[:77]}..."
        raise ValueError(f"data.chat_template={shown!r} cannot render a user/assistant exchange: {error}") from error
    return tokenizer

"""The on-disk cache of tokenised examples: a folder per key, built once, then memory-mapped by every later run.

The key is a hash of everything the examples depend on: the cache's layout, lit-ft's data code (its source files),
the ``transformers`` and ``tokenizers`` versions, the tokenizer (vocabulary, normaliser, pre- and post-processing,
special tokens and chat template), the DataModule's settings that change examples (``max_length``, truncation,
the validation hold-out, ...), and each source's contents (:meth:`~lit_ft.data.sources.RowSource.fingerprint`).
Anything else (batch size, learning rate, packing, a mixture's weights) leaves the key alone, so the jobs of a
``-m`` sweep share one build.

A folder is built under a file lock into a temporary sibling and renamed into place when complete: a process that
finds the folder finds all of it, one killed mid-build leaves no folder (the next run builds again), and the other
processes that want the same key (the ranks of a node, parallel sweep jobs) wait for the build and then map it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tokenizers
import transformers
from filelock import FileLock
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CACHE_LAYOUT = 1  # raise when what a cache folder holds changes shape
_DATA_CODE = Path(__file__).parent


def _digest(*chunks: bytes) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def code_fingerprint() -> str:
    """A hash of lit-ft's data code (``lit_ft/data``: readers, formats, templates, tokenisation), so a change to
    how rows become examples never reuses examples built by the old code."""
    files = sorted(path for path in _DATA_CODE.rglob("*") if path.is_file() and path.suffix in (".py", ".jinja"))
    return _digest(*(path.relative_to(_DATA_CODE).as_posix().encode() + path.read_bytes() for path in files))


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what the tokenizer does to text: its fast tokenizer's definition (vocabulary, normaliser, pre- and
    post-processing) or a slow one's vocabulary, its special tokens, settings and chat template; not its path."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {key: value for key, value in tokenizer.init_kwargs.items() if key != "name_or_path"}
    described = {
        "class": type(tokenizer).__name__,
        "special_tokens": tokenizer.all_special_tokens,
        "settings": settings,
        "chat_template": tokenizer.chat_template,
    }
    return _digest(definition.encode(), json.dumps(described, sort_keys=True, default=str).encode())


def cache_key(settings: Mapping[str, Any]) -> str:
    """The folder name for examples built with ``settings`` (JSON-able) by this code and these libraries."""
    versions = {"layout": CACHE_LAYOUT, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    described = json.dumps({**settings, **versions, "code": code_fingerprint()}, sort_keys=True, default=str)
    return _digest(described.encode())[:24]


def build_once(folder: Path, build: Callable[[Path], None]) -> bool:
    """Make sure ``folder`` holds a complete build: if it does not exist, run ``build(into)`` on an empty temporary
    sibling under a file lock and rename it to ``folder``. Returns whether this call built it."""
    if folder.is_dir():
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if folder.is_dir():  # another process built it while this one waited
            return False
        building = Path(tempfile.mkdtemp(prefix=f"{folder.name}.building-", dir=folder.parent))
        try:
            build(building)
            os.rename(building, folder)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return True


def folder_size(folder: Path) -> int:
    """Bytes in the files of ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())

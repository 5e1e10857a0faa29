"""Long documents for continual pre-training: concatenated and cut into ``max_length`` blocks, not truncated.

Under ``long_documents=blocks`` (:class:`~lit_ft.data.sft_datamodule.SFTDataModule`) a raw-text row longer than
``max_length`` is a *document* for :func:`make_blocks`; rows that fit stay whole examples, as under ``truncate``, so
data with no long row gives the same examples either way. The documents of a source are concatenated in file order
into one token stream per task type, each ending in the EOS that :func:`~lit_ft.data.tokenize.tokenize_text`
appends (so EOS stands between documents), and the stream is cut into blocks of ``max_length`` tokens that overlap
by ``stride`` (HF's ``run_clm.py`` ``group_texts`` and LitGPT cut a token stream so, with no overlap, and
``group_texts`` drops the remainder):

    block k = stream[k * (max_length - stride) : k * (max_length - stride) + max_length]

the last one shorter when the stream runs out (kept: nothing is dropped), none made of overlap alone.

- Labels: a block's tokens keep their labels (every token of a raw-text row carries loss), except the first
  ``stride`` of every block after a stream's first: the previous block already trained on them, so here they are
  context only (-100) and each token of the stream is a target once. A block's first token is never a target (no
  token before it in the block), so ``stride=0`` trains all but one token per block (as ``group_texts`` does) and
  ``stride >= 1`` trains them all, with ``stride`` tokens of context at the start of each block.
- Attention: a block is one sequence, so it attends across the EOS into the next document, as in pre-training on
  concatenated text; the EOS tells the model where a document ends.
- Task types: only documents of the same task type are concatenated, so a block has one ``task_type`` and its
  ``task_ids`` are one id on every token, as the batch contract (:mod:`lit_ft.data.batch`) says of an example.
- Packing and padding-free batches take blocks as any other example: a full block fills a pack of ``max_length`` on
  its own (packing never splits an example), a stream's last, shorter block shares a pack with the short rows, and
  packing's rule that an example's first label is -100 is the same rule as above (a block's first token is never a
  target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lit_ft.data.batch import IGNORE_INDEX, TokenizedExample, Tokens
from lit_ft.data.rows import SFTExample, TextExample

LongDocuments = Literal["truncate", "blocks"]


def is_document(example: SFTExample) -> bool:
    """A raw-text row (``text``, or a completion with no prompt): loss on every token, so it may be cut anywhere."""
    return isinstance(example, TextExample) and not example.prompt


def check_stride(stride: int, max_length: int) -> None:
    """A block repeats ``0 <= stride < max_length`` tokens of the previous one, so each block has a new token."""
    if not 0 <= stride < max_length:
        raise ValueError(f"block_stride={stride} must be at least 0 and less than max_length={max_length}")


def make_blocks(documents: Sequence[TokenizedExample], max_length: int, stride: int = 0) -> list[TokenizedExample]:
    """Concatenate ``documents`` (each ending in EOS) per task type, in order, and cut them into blocks of
    ``max_length`` tokens overlapping by ``stride``; the overlap carries no loss (module doc)."""
    check_stride(stride, max_length)
    streams: dict[str, Tokens] = {}
    for document in documents:
        stream = streams.setdefault(document["task_type"], {"input_ids": [], "labels": []})
        stream["input_ids"] += document["input_ids"]
        stream["labels"] += document["labels"]
    blocks: list[TokenizedExample] = []
    for task_type, stream in streams.items():
        # a block starts every max_length - stride tokens while it has a token the previous one lacks (the first has)
        for start in range(0, max(1, len(stream["input_ids"]) - stride), max_length - stride):
            context = stride if start else 0
            labels = [IGNORE_INDEX] * context + stream["labels"][start + context : start + max_length]
            blocks.append(
                {"input_ids": stream["input_ids"][start : start + max_length], "labels": labels, "task_type": task_type}
            )
    return blocks

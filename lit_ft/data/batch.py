"""The example and batch contract: what the data layer hands the modules, and the counts read off a batch.

Examples (lists of ints, one entry per token; what a DataModule holds and a collator reads):

- :class:`Tokens`: one tokenised sequence. ``input_ids`` [T]; ``labels`` [T] equal to ``input_ids`` where the token
  carries loss and :data:`IGNORE_INDEX` (-100) elsewhere, *not shifted*: label ``t`` is the target of the prediction
  made at ``t - 1`` (the loss shifts), so a label at position 0 is never a target.
- :class:`TokenizedExample`: an SFT or CPT example, its :class:`Tokens` plus its ``task_type`` (a name) and, once the
  DataModule knows every task type, ``task_ids`` [T] (its task id on every token).
- :class:`PackedExample`: several examples back to back (packing, padding-free batches): ``position_ids`` [T] restart
  at 0 at each example, and each example's first label is -100 (it would be predicted from the previous example).
- :class:`UnpairedExample`: one answer judged on its own (the KTO format), its :class:`Tokens` (prompt + answer, loss
  on the answer only), ``task_type`` and ``label`` (``True``: desirable). Ready for an unpaired preference loss.
- :class:`TokenizedPair`: a preference pair, ``chosen`` and ``rejected`` :class:`Tokens` (prompt + answer, loss on the
  answer only), ``task_type``, ``margin`` (``None`` when the row gives none), and, once set up, ``task_id`` and
  ``example_index`` (the pair's position in its split).

Batches (tensors; long unless said; B examples, T tokens after padding):

- :class:`PaddedBatch`: ``input_ids``, ``labels``, ``task_ids`` and ``attention_mask`` [B, T], right-padded: padding
  has the pad token, label -100, task id -1 and attention mask 0.
- :class:`PackedBatch`: ``input_ids``, ``labels``, ``task_ids`` and ``position_ids`` [B, T], *no* ``attention_mask``:
  from the position restarts transformers builds a block-diagonal causal mask (sdpa/eager) or varlen boundaries
  (flash attention, ``sdpa_varlen``), so no token attends across an example boundary. The padding after a pack is a
  run of its own (positions from 0, labels -100, task id -1). A padding-free batch is a packed batch of one row
  holding the B examples of a padded batch back to back: the same examples and targets, no padding.
- :class:`PreferenceBatch`: a :class:`PaddedBatch` of 2B rows, the B chosen sequences (rows ``[0, B)``) then the B
  rejected ones (rows ``[B, 2B)``), so one forward pass scores both; a sequence's completion mask is
  ``labels != -100``. Plus ``margin`` [B] float32 (0 where a row gives none) and ``example_index`` [B] (the key of
  cached reference log-probs).
- :class:`PaddingFreePreferenceBatch` (``data.padding_free``): the same 2B sequences in the same order (chosen, then
  rejected) back to back in one row, a :class:`PackedBatch` [1, T] with no padding; a sequence's log-probs are a
  sum over its segment (:func:`sequence_ids`), a reward model's score is read at its last token
  (``cu_seq_lens_q[1:] - 1``). Plus ``margin`` and ``example_index`` as above.
- :class:`SharedPromptBatch` (``data.shared_prompt``): each pair as one sequence ``prompt + chosen + rejected``
  (:mod:`lit_ft.data.shared_prompt`; the rejected answer's positions continue from the prompt's end), the B pairs
  back to back in one row, a :class:`PackedBatch` [1, T] without varlen arguments (flash attention cannot keep the
  rejected answer off the chosen one). Plus ``sequence_ids`` [1, T] (each token's side: chosen answer of pair i is
  sequence i, its rejected answer B + i, the prompt counts with the chosen side, padding 2B), ``sequence_ends``
  [2B] (each side's last token, chosen first), ``margin`` and ``example_index``.

Padding-free batches (SFT's and preference ones) also carry flash attention's varlen arguments, named as
transformers' ``FlashAttentionKwargs`` name them and computed on the host by the collator, so that no layer
re-derives them from ``position_ids`` (a device-to-host sync per forward on GPU): ``cu_seq_lens_q`` and
``cu_seq_lens_k`` [S + 1] int32, each segment's start offset then T (S segments, the padding run of
``pad_to_multiple_of`` included), and ``max_length_q`` and ``max_length_k`` (python ints, the longest segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import torch

IGNORE_INDEX = -100  # the label of a token without loss (torch's cross_entropy ignore_index)


class Tokens(TypedDict):
    """One tokenised sequence: ``input_ids`` [T], ``labels`` [T] (not shifted, -100 where no loss)."""

    input_ids: list[int]
    labels: list[int]


class _TaskIds(TypedDict, total=False):
    task_ids: list[int]  # [T], the example's task id on every token; set once all task types are known


class TokenizedExample(Tokens, _TaskIds):
    """An SFT/CPT example: its tokens, its task type and (after setup) ``task_ids``."""

    task_type: str


class PackedExample(TypedDict):
    """Examples back to back: every list [T]; ``position_ids`` restart at 0 at each example."""

    input_ids: list[int]
    labels: list[int]
    task_ids: list[int]
    position_ids: list[int]


class UnpairedExample(Tokens):
    """An unpaired preference example (KTO): its tokens, its task type and whether its answer is desirable."""

    task_type: str
    label: bool


class _PairIds(TypedDict, total=False):
    task_id: int  # set once all task types are known
    example_index: int  # the pair's position in its split (after setup)


class TokenizedPair(_PairIds):
    """A preference pair: both sides' tokens, its task type and its margin (``None``: none given)."""

    chosen: Tokens
    rejected: Tokens
    task_type: str
    margin: float | None


Example = TokenizedExample | PackedExample | TokenizedPair  # what a DataModule's loaders serve


class PaddedBatch(TypedDict):
    """Right-padded examples, one a row."""

    input_ids: torch.Tensor  # [B, T] long, the pad token on padding
    labels: torch.Tensor  # [B, T] long, not shifted, -100 where no loss (padding included)
    task_ids: torch.Tensor  # [B, T] long, -1 on padding
    attention_mask: torch.Tensor  # [B, T] long, 1 on tokens, 0 on padding


class PackedBatch(TypedDict):
    """Examples back to back in each row (packing, padding-free); no ``attention_mask``."""

    input_ids: torch.Tensor  # [B, T] long
    labels: torch.Tensor  # [B, T] long, not shifted, -100 where no loss and on each example's first token
    task_ids: torch.Tensor  # [B, T] long, -1 on padding
    position_ids: torch.Tensor  # [B, T] long, restarting at 0 at every example (and at the padding after a pack)


class _PairFields(TypedDict):
    margin: torch.Tensor  # [B] float32, 0 where the row gives none
    example_index: torch.Tensor  # [B] long, each pair's position in its split


class PreferenceBatch(PaddedBatch, _PairFields):
    """B pairs as 2B padded rows, chosen first (rows ``[0, B)``), rejected after (rows ``[B, 2B)``)."""


class VarlenArguments(TypedDict):
    """Flash attention's varlen arguments of a one-row batch (transformers' ``FlashAttentionKwargs``)."""

    cu_seq_lens_q: torch.Tensor  # [S + 1] int32, segment starts then the row's length
    cu_seq_lens_k: torch.Tensor  # [S + 1] int32, the same offsets (self-attention)
    max_length_q: int  # the longest segment
    max_length_k: int


class PaddingFreeBatch(PackedBatch, VarlenArguments):
    """A padding-free batch: one row [1, T] of its examples back to back, with the varlen arguments."""


class PaddingFreePreferenceBatch(PaddingFreeBatch, _PairFields):
    """B pairs' 2B sequences, chosen first, back to back in one row [1, T]."""


class SharedPromptBatch(PackedBatch, _PairFields):
    """B pairs, each as one sequence ``prompt + chosen + rejected``, back to back in one row [1, T]."""

    sequence_ids: torch.Tensor  # [1, T] long: i on pair i's prompt and chosen answer, B + i on its rejected, 2B padding
    sequence_ends: torch.Tensor  # [2B] long, the last token of each side, chosen first


Batch = PaddedBatch | PackedBatch | PreferenceBatch | PaddingFreeBatch | PaddingFreePreferenceBatch | SharedPromptBatch
OneRowPreferenceBatch = PaddingFreePreferenceBatch | SharedPromptBatch


def loss_tokens(labels: torch.Tensor | Sequence[int], dim: int | None = None) -> torch.Tensor:
    """Tokens that carry loss, ``labels != IGNORE_INDEX``, summed over ``dim`` (over everything when ``None``).

    An example's labels count as they are. A batch's *targets* are its labels shifted (position 0 predicts
    nothing): count them as ``loss_tokens(shift_labels(labels))``.
    """
    mask = torch.as_tensor(labels) != IGNORE_INDEX
    return mask.sum() if dim is None else mask.sum(dim)


def non_padding_tokens(batch: Batch) -> torch.Tensor:
    """Tokens that are not padding: ``attention_mask`` ones (padded batches), else ``task_ids >= 0`` (packed)."""
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].sum()
    return (batch["task_ids"] >= 0).sum()


def example_task_ids(batch: Batch) -> torch.Tensor:
    """The task id of every example in the batch, [E] long.

    A padded batch holds one example per row (its task is ``task_ids[:, 0]``); a packed batch one per run of
    ``position_ids``: a run restarting at 0, or a shared-prompt branch, whose positions jump back to continue its
    trunk (a pair's rejected answer, a group's later completions: sequences of their own in a padded batch, so
    counted alike). The padding after a pack is a run with task id -1, skipped.
    """
    task_ids = batch["task_ids"]
    if batch.get("position_ids") is not None:
        positions = batch["position_ids"]
        starts = torch.ones_like(positions, dtype=torch.bool)
        starts[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
        return task_ids[starts & (task_ids >= 0)]
    first = task_ids[:, 0]
    return first[first >= 0]


def varlen_arguments(position_ids: Sequence[int]) -> VarlenArguments:
    """The varlen arguments of one row whose segments start where ``position_ids`` is 0: what transformers'
    ``prepare_fa_kwargs_from_position_ids`` derives on the device, computed here on the host."""
    starts = [i for i, p in enumerate(position_ids) if p == 0]
    offsets = [*starts, len(position_ids)]
    cu_seq_lens = torch.tensor(offsets, dtype=torch.int32)
    longest = max(b - a for a, b in zip(offsets, offsets[1:]))
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def sequence_ids(batch: PackedBatch | SharedPromptBatch) -> torch.Tensor:
    """Which sequence of its row each token of a packed or padding-free batch belongs to, [B, T] long:
    ``cumsum(position_ids == 0) - 1`` (no host sync); a shared-prompt batch's own ``sequence_ids``."""
    if "sequence_ids" in batch:
        return batch["sequence_ids"]
    return (batch["position_ids"] == 0).long().cumsum(-1) - 1


def pair_count(batch: PreferenceBatch | OneRowPreferenceBatch) -> int:
    """B, the pairs of a preference batch (2B sequences), in any layout."""
    return len(batch["example_index"])


def sequence_ends(batch: OneRowPreferenceBatch) -> torch.Tensor:
    """The last token of each of a one-row preference batch's 2B sequences, chosen first, [2B] long: a
    padding-free batch's ``cu_seq_lens_q[1:] - 1``, a shared-prompt batch's ``sequence_ends`` (no host sync)."""
    if "sequence_ends" in batch:
        return batch["sequence_ends"]
    return batch["cu_seq_lens_q"][1 : 2 * pair_count(batch) + 1].long() - 1


def sequence_task_ids(batch: PreferenceBatch | OneRowPreferenceBatch) -> torch.Tensor:
    """The task id of each of a preference batch's 2B sequences, [2B] long: a padded batch's first column, a
    one-row batch's ``task_ids`` at each sequence's last token (:func:`sequence_ends`)."""
    if batch.get("position_ids") is None:
        return batch["task_ids"][:, 0]
    return batch["task_ids"][0, sequence_ends(batch)]

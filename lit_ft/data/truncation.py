"""The one rule for examples longer than ``max_length``, and for examples left without loss.

An example is one sequence (SFT, CPT) or several that live or die together (a preference pair: chosen and
rejected). :func:`truncate` cuts each sequence to ``max_length`` on its own (``right`` keeps the start, ``left``
the end) and says what became of the example, so :meth:`SplitStats.count <lit_ft.data.stats.SplitStats.count>`
records it and nothing is dropped silently:

- dropped as ``too_long`` when a sequence was longer than ``max_length`` and the policy is ``drop``;
- dropped as ``no_loss_tokens`` when a sequence has no loss token left (truncation cut its whole answer);
- kept otherwise, truncated when anything was cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lit_ft.data.batch import Tokens, loss_tokens

TruncationPolicy = Literal["right", "left", "drop"]
DropReason = Literal["too_long", "no_loss_tokens"]


@dataclass(frozen=True)
class Truncated:
    """What :func:`truncate` made of an example's sequences.

    Attributes:
        sequences: each sequence cut to ``max_length`` (on the right under ``drop``; a dropped example's are unused).
        cut_tokens: tokens cut, all sequences together.
        tokens / loss_tokens: tokens and loss-carrying tokens left, all sequences together.
        dropped: why the example is dropped; ``None`` when it is kept.
    """

    sequences: tuple[Tokens, ...]
    cut_tokens: int
    tokens: int
    loss_tokens: int
    dropped: DropReason | None

    @property
    def kept(self) -> bool:
        return self.dropped is None


def _cut(tokens: Tokens, max_length: int, side: Literal["right", "left"]) -> Tokens:
    """Every list of ``tokens`` cut to ``max_length`` (``right`` keeps the start, ``left`` the end)."""
    length = len(tokens["input_ids"])
    if length <= max_length:
        return tokens
    return {
        key: values[:max_length] if side == "right" else values[length - max_length :] for key, values in tokens.items()
    }


def truncate(sequences: Sequence[Tokens], max_length: int, policy: TruncationPolicy) -> Truncated:
    """Fit an example's sequences to ``max_length`` under ``policy`` and decide whether it is kept (module doc)."""
    cut = tuple(_cut(tokens, max_length, "right" if policy == "drop" else policy) for tokens in sequences)
    lengths = [len(tokens["input_ids"]) for tokens in cut]
    cut_tokens = sum(len(tokens["input_ids"]) for tokens in sequences) - sum(lengths)
    loss = [int(loss_tokens(tokens["labels"])) for tokens in cut]
    dropped: DropReason | None = None
    if cut_tokens and policy == "drop":
        dropped = "too_long"
    elif min(loss) == 0:
        dropped = "no_loss_tokens"
    return Truncated(cut, cut_tokens, sum(lengths), sum(loss), dropped)

"""The shared-prompt layout of a preference pair: ``prompt + chosen + rejected`` in one sequence, the prompt run once.

Chosen and rejected are tokenised as two full conversations that start with the same prompt. Laid out as
``trunk + chosen branch + rejected branch``, the trunk (the tokens both sides share) runs through the model once.
The rejected branch's ``position_ids`` continue from the trunk's end, as if it followed the trunk directly; that
jump is what tells :mod:`lit_ft.models.attention` (``sdpa_varlen``) to let the rejected branch attend to the
trunk and to itself, never to the chosen branch.

The trunk stops one token before the first token that differs or carries a label, so each branch starts with an
unlabelled token (the prompt's last one, repeated): the first answer token of each side is then predicted inside
its own branch, and the token before a branch predicts nothing (its target, the branch's first token, has label
-100). Every answer token keeps its own target, so the two sides' log-probs and last tokens are those of the
unshared sequences.
"""

from __future__ import annotations

from lit_ft.data.batch import IGNORE_INDEX, PackedExample, TokenizedPair


def shared_length(pair: TokenizedPair) -> int:
    """The trunk's length: tokens equal on both sides and unlabelled, less one (0 when they share none)."""
    chosen, rejected = pair["chosen"], pair["rejected"]
    common = 0
    for c, r, c_label, r_label in zip(chosen["input_ids"], rejected["input_ids"], chosen["labels"], rejected["labels"]):
        if c != r or c_label != IGNORE_INDEX or r_label != IGNORE_INDEX:
            break
        common += 1
    return max(common - 1, 0)


def shared_prompt_sequence(pair: TokenizedPair) -> tuple[PackedExample, int]:
    """One sequence ``chosen + rejected[trunk:]``, positions ``0..len(chosen)`` then ``trunk..len(rejected)``, the
    pair's ``task_id`` on every token; and where the rejected branch starts in it (``len(chosen)``)."""
    chosen, rejected = pair["chosen"], pair["rejected"]
    trunk, length = shared_length(pair), len(chosen["input_ids"])
    branch = len(rejected["input_ids"]) - trunk
    example: PackedExample = {
        "input_ids": chosen["input_ids"] + rejected["input_ids"][trunk:],
        "labels": chosen["labels"] + rejected["labels"][trunk:],
        "task_ids": [pair["task_id"]] * (length + branch),
        "position_ids": list(range(length)) + list(range(trunk, trunk + branch)),
    }
    return example, length

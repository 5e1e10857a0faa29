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

Online RL's groups (:func:`prompt_group_sequence`) use the same layout with one trunk and many branches: a prompt
and its G sampled completions, ``prompt + c_1`` then one branch ``prompt[-1] + c_k`` per later completion, each
attending to the prompt and itself only.
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


def prompt_group_sequence(
    prompt: list[int], completions: list[list[int]], task_id: int
) -> tuple[PackedExample, list[int]]:
    """One sequence for a prompt and its G completions, the prompt run once: ``prompt + c_1``, then a branch
    ``prompt[-1] + c_k`` for each later completion, its positions ``P-1 .. P-1+len(c_k)`` continuing from the
    prompt's first ``P-1`` tokens (P = len(prompt)), its first token unlabelled; labels on the completion tokens,
    ``task_id`` on every token. Also which completion (0..G-1) each token's label belongs to, -1 where none.

    Every completion token is predicted from the prompt and its own completion's earlier tokens, exactly as in the
    sequence ``prompt + c_k`` alone: the same log-probs as the unshared layout."""
    trunk, length = len(prompt) - 1, len(prompt) + len(completions[0])
    example: PackedExample = {
        "input_ids": prompt + completions[0],
        "labels": [IGNORE_INDEX] * len(prompt) + completions[0],
        "task_ids": [task_id] * length,
        "position_ids": list(range(length)),
    }
    owners = [-1] * len(prompt) + [0] * len(completions[0])
    for k, completion in enumerate(completions[1:], start=1):
        example["input_ids"] += [prompt[-1], *completion]
        example["labels"] += [IGNORE_INDEX, *completion]
        example["task_ids"] += [task_id] * (len(completion) + 1)
        example["position_ids"] += list(range(trunk, trunk + len(completion) + 1))
        owners += [-1] + [k] * len(completion)
    return example, owners

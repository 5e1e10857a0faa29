"""The batch a policy trains on from its rollouts (``module=rl``): B prompts with G sampled completions each
(N = B * G, prompt-major), labels on the completion tokens only.

Two layouts, the same per-token log-probs:

- padded: one row ``prompt + completion`` per completion ([N, T], ``attention_mask``), each prompt run G times;
- shared-prompt: one padding-free row ([1, T], ``position_ids``, no ``attention_mask``), each group one sequence
  whose prompt runs once and whose completions branch off it
  (:func:`~lit_ft.data.shared_prompt.prompt_group_sequence`; needs ``sdpa_varlen``, which reads the branches from
  the positions).

Both carry ``completion_index`` (same shape as ``input_ids``): the completion (0..N-1) each token's label belongs
to, N where a token carries no label; per-completion sums and broadcasts go through it
(:func:`~lit_ft.losses.per_sequence_sum`), so whoever reads the batch need not know its layout.
"""

from __future__ import annotations

import torch

from lit_ft.data.batch import IGNORE_INDEX
from lit_ft.data.collate import Collator
from lit_ft.data.packing import concatenate_examples
from lit_ft.data.shared_prompt import prompt_group_sequence

# Every key a rollout batch may carry (a layout has either attention_mask or position_ids).
ROLLOUT_KEYS = ("input_ids", "labels", "task_ids", "attention_mask", "position_ids", "completion_index")


def rollout_batch(
    prompts: list[list[int]], completions: list[list[int]], task_ids: list[int], pad_id: int, shared_prompt: bool
) -> dict[str, torch.Tensor]:
    """The rollouts' batch: ``prompts`` [B] (token ids), ``completions`` [N] (G = N // B per prompt, prompt-major),
    ``task_ids`` [B] (each prompt's task id); shared-prompt layout or padded (``pad_id``, task id -1 on padding)."""
    group, count = len(completions) // len(prompts), len(completions)
    groups = [completions[i * group : (i + 1) * group] for i in range(len(prompts))]
    if shared_prompt:
        sequences = [prompt_group_sequence(p, g, task) for p, g, task in zip(prompts, groups, task_ids)]
        batch = Collator(pad_id)([concatenate_examples([sequence for sequence, _ in sequences])])
        owners = [[o if o < 0 else i * group + o for i, (_, own) in enumerate(sequences) for o in own]]
    else:
        examples = [
            {"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c, "task_ids": [task] * (len(p) + len(c))}
            for p, g, task in zip(prompts, groups, task_ids)
            for c in g
        ]
        batch = Collator(pad_id)(examples)
        owners = [[-1] * len(p) + [i * group + k] * len(c) for i, (p, g) in enumerate(zip(prompts, groups))
                  for k, c in enumerate(g)]  # fmt: skip
    width = batch["input_ids"].shape[1]
    batch["completion_index"] = torch.tensor(
        [[count if o < 0 else o for o in row] + [count] * (width - len(row)) for row in owners], dtype=torch.long
    )
    return batch

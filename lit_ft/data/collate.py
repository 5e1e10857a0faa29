"""Batch tokenised examples: right-padded, packed several to a sequence, or padding-free.

Batch contract (see DESIGN.md): ``input_ids`` and ``labels`` [B, T] long (labels not shifted, -100 where no
loss); ``task_ids`` [B, T] (-1 on padding). Padded batches carry ``attention_mask`` [B, T]. Packed batches
carry ``position_ids`` [B, T] restarting at 0 for every example and no ``attention_mask``: from the
restarts, transformers builds a block-diagonal causal mask (sdpa/eager) or varlen boundaries (flash
attention), so no token attends across an example boundary. A padding-free batch is a packed batch of one
row holding the B examples of a padded batch back to back: the same examples and targets, no padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lit_ft.data.packing import concatenate_examples
from lit_ft.data.tokenize import IGNORE_INDEX

Example = dict[str, list[int]]


@dataclass
class Collator:
    """Pad a list of examples to one tensor batch (to a multiple of ``pad_to_multiple_of`` when set).

    Examples from :func:`lit_ft.data.packing.pack_examples` (which carry ``position_ids``) give packed batches; the padding
    after each pack continues as its own position run so it forms a separate, loss-free segment.

    With ``padding_free`` the examples are concatenated into one row ([1, sum of lengths]) instead: no token
    is padding, and each example keeps its own positions (see :func:`concatenate_examples`).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        if self.padding_free:
            examples = [concatenate_examples(examples)]
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in examples[0]

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([e[key] + [value] * (length - len(e[key])) for e in examples], dtype=torch.long)

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "labels": pad("labels", IGNORE_INDEX),
            "task_ids": pad("task_ids", -1),
        }
        if packed:
            batch["position_ids"] = torch.tensor(
                [e["position_ids"] + list(range(length - len(e["position_ids"]))) for e in examples], dtype=torch.long
            )
        else:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (length - len(e["input_ids"])) for e in examples], dtype=torch.long
            )
        return batch

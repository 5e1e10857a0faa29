"""A LoRA forward that adds the scaled update inside the second adapter matmul: ``addmm(W x, A x, B^T, alpha=s)``.

peft's ``lora.Linear`` computes ``result + lora_B(lora_A(dropout(x))) * scaling``. Besides the matmuls, that is a
multiply and an add over the [tokens, out] output of every adapted projection (210 of each per pass for SmolLM2),
and their backward; on the 2-core Xeon, where matmuls are fast, multiplies and adds were 13% of a LoRA step's CPU
time (docs/performance.md). ``torch.addmm(result, A x, B^T, alpha=scaling)`` writes ``result + scaling * (A x) B^T``
in the matmul itself, and its backward scales inside the matmuls too. Same values up to float rounding, same
gradients.

Used where that is exact: vanilla LoRA (no DoRA or other variant), no adapter dropout, one active adapter, not
merged or disabled, no extra forward arguments, one dtype and no autocast (peft's own casts apply there), and
weights that are not DeepSpeed ZeRO-3 partitions (which are gathered by calling the adapter module itself). Anything
else runs peft's own forward, which this class inherits.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from peft.tuners.lora import layer as lora_layer


class AddmmLoraLinear(lora_layer.Linear):
    """peft's LoRA ``Linear`` with the addmm path; everything but ``forward`` is peft's."""

    def addmm_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> str | None:
        """The adapter the addmm path can run for this call, or None (then peft's forward runs)."""
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        name = self.active_adapters[0]
        if name not in self.lora_A or name in self.lora_variant:
            return None
        lora_a, lora_b = self.lora_A[name], self.lora_B[name]
        if not isinstance(self.lora_dropout[name], torch.nn.Identity) or lora_b.bias is not None:
            return None
        if torch.is_autocast_enabled(x.device.type) or hasattr(lora_b.weight, "ds_id"):
            return None
        dtypes = {x.dtype, lora_a.weight.dtype, lora_b.weight.dtype, self.get_base_layer().weight.dtype}
        return name if len(dtypes) == 1 else None

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = self.addmm_adapter(x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)  # [..., out]
        down = self.lora_A[name](x)  # [..., r]
        update = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            down.reshape(-1, down.shape[-1]),
            self.lora_B[name].weight.t(),
            alpha=self.scaling[name],
        )
        return update.view(result.shape)


def use_addmm_lora(model: PeftModel) -> int:
    """Give every plain peft LoRA ``Linear`` of ``model`` the addmm forward (in place); the number changed."""
    changed = 0
    for module in model.modules():
        if type(module) is lora_layer.Linear:
            module.__class__ = AddmmLoraLinear
            changed += 1
    return changed

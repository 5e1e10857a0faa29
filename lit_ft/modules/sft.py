"""Supervised fine-tuning (and continual pre-training: same loss, labels on every token)."""

from lit_ft.modules.causal_lm import CausalLMModule


class SFTModule(CausalLMModule):
    """Full-parameter (or adapter and frozen-backbone, via ``adapter`` and ``freeze``) supervised fine-tuning.

    The loss is next-token cross-entropy on the tokens the data labels (assistant turns for chat data,
    completions for prompt/completion data, every token for raw text), averaged per optimizer step.
    """

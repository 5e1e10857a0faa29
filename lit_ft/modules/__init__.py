"""LightningModules: a causal-LM base and its SFT, reward-model and DPO specialisations."""

from lit_ft.modules.causal_lm import CausalLMModule
from lit_ft.modules.dpo import DPOModule
from lit_ft.modules.pairwise import PairwiseModule
from lit_ft.modules.reward import RewardModelModule
from lit_ft.modules.sft import SFTModule

__all__ = ["CausalLMModule", "DPOModule", "PairwiseModule", "RewardModelModule", "SFTModule"]

"""LightningModules: a fine-tuning base, a causal-LM module on token losses and its SFT, reward-model and DPO
specialisations, and online RL."""

from lit_ft.modules.causal_lm import CausalLMModule
from lit_ft.modules.dpo import DPOModule
from lit_ft.modules.ewc import EWC
from lit_ft.modules.fine_tune import FineTuneModule
from lit_ft.modules.mixout import Mixout
from lit_ft.modules.pairwise import PairwiseModule
from lit_ft.modules.reward import RewardModelModule
from lit_ft.modules.rl import RLModule
from lit_ft.modules.sft import SFTModule

__all__ = [
    "EWC",
    "CausalLMModule",
    "DPOModule",
    "FineTuneModule",
    "Mixout",
    "PairwiseModule",
    "RLModule",
    "RewardModelModule",
    "SFTModule",
]

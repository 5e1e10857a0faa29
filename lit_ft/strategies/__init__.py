"""Scale-out strategies (DDP, FSDP2, FSDP1, DeepSpeed ZeRO on Lightning's own, launched safely from Hydra) and
checkpoint I/O plugins."""

from lit_ft.strategies.checkpoint_io import AtomicCheckpointIO
from lit_ft.strategies.ddp import DDPStrategy
from lit_ft.strategies.deepspeed import DeepSpeedStrategy, deepspeed_config
from lit_ft.strategies.fsdp1 import FSDP1Strategy
from lit_ft.strategies.fsdp2 import FSDP2Strategy
from lit_ft.strategies.launch import HydraJobLauncher, end_processes, hydra_job_command

__all__ = [
    "AtomicCheckpointIO",
    "DDPStrategy",
    "DeepSpeedStrategy",
    "FSDP1Strategy",
    "FSDP2Strategy",
    "HydraJobLauncher",
    "deepspeed_config",
    "end_processes",
    "hydra_job_command",
]

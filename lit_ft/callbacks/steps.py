"""Which training batches end an optimizer step, which steps close a logging window, and which step's weights the
module holds."""

from __future__ import annotations

import lightning as L

from lit_ft.utils.protocols import TrainedModule


def weights_step(trainer: L.Trainer) -> int:
    """The optimizer step whose weights the module holds: ``trainer.global_step``, unless something put back an
    earlier step's weights and recorded it on the module (``restored_step``: early stopping restores the best
    check's when training ends). Checks that run after training (validation, forgetting, samples) label their
    results with it."""
    module = trainer.lightning_module
    restored = module.restored_step if isinstance(module, TrainedModule) else None
    return trainer.global_step if restored is None else restored


class StepTracker:
    """Call :meth:`start` when training starts, then :meth:`stepped` once at the end of every training batch.

    Under gradient accumulation several batches make one optimizer step; ``trainer.global_step`` moves on the
    batch that took it. Lightning sends logged values to the loggers after every ``log_every_n_steps``-th step,
    which is when windowed callbacks (per-task loss, throughput) close their window.
    """

    def __init__(self) -> None:
        self.last_step = 0

    def start(self, trainer: L.Trainer) -> None:
        self.last_step = trainer.global_step

    def stepped(self, trainer: L.Trainer) -> bool:
        """Whether the batch that has just ended took an optimizer step."""
        stepped, self.last_step = trainer.global_step != self.last_step, trainer.global_step
        return stepped

    @staticmethod
    def closes_window(trainer: L.Trainer) -> bool:
        """Whether the step just taken ends a logging window of ``log_every_n_steps`` steps."""
        return bool(trainer.log_every_n_steps) and trainer.global_step % trainer.log_every_n_steps == 0

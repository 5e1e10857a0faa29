"""Training throughput (non-padding tokens/s, samples/s), MFU and peak memory."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

from lit_ft.callbacks.steps import StepTracker
from lit_ft.data.batch import example_task_ids, non_padding_tokens
from lit_ft.models.flops import head_flops_per_token, training_flops_per_token
from lit_ft.utils.metric_names import MFU, PEAK_MEM_GB, SAMPLES_PER_S, TOKENS_PER_S
from lit_ft.utils.perf import compute_dtype, peak_flops, peak_memory_bytes
from lit_ft.utils.protocols import HeadPositions, TrainedBatch

log = logging.getLogger(__name__)


class Throughput(L.Callback):
    """Log ``perf/tokens_per_s``, ``perf/samples_per_s``, ``perf/mfu`` and ``perf/peak_mem_gb``.

    - tokens are the non-padding tokens of the training batches (``attention_mask`` ones, or the tokens of a
      packed batch that are not padding: ``task_ids >= 0``), on all ranks together; samples are examples (one per
      padded row, one per packed segment). The batch is the one the model trained on: for a module that trains on
      batches of its own making (``TrainedBatch``: online RL's rollouts), that one, so an RL step counts each
      prompt once per completion sampled from it, plus the completions, and not the reference answers of the
      loader's rows; its samples are completions;
    - time is wall time spent in the training loop (data loading included), validation and checks excluded;
    - MFU = ``training FLOPs/s / (peak_flops · world_size)``. A batch's FLOPs are
      :func:`~lit_ft.models.flops.training_flops_per_token` (6·N for full fine-tuning, about 4·N for LoRA) per
      token, less the LM head's share (:func:`~lit_ft.models.flops.head_flops_per_token`) on the tokens a module
      skips it for (``head_positions``: with ``head_on_loss_tokens`` the head runs on loss tokens only, so
      counting it on every token would credit work never done, and can read above a measured peak);
      ``peak_flops`` is per device: a number, or ``"auto"``: on CUDA the GPU's datasheet peak for the training
      dtype (Lightning's table), on CPU a matmul in that dtype measured once at the start (about a second)
      (:func:`~lit_ft.utils.perf.peak_flops`); or None to skip MFU. The summary says which (``mfu_basis``);
    - peak memory: CUDA max allocated, else the process's peak RSS (max over ranks), in GB (1e9 bytes).

    Values cover a window of ``trainer.log_every_n_steps`` optimizer steps. :meth:`summary` (``perf`` in
    ``summary.json``) gives run averages, leaving out the first ``warmup_steps`` optimizer steps.
    """

    def __init__(self, peak_flops: float | str | None = None, warmup_steps: int = 1) -> None:
        if isinstance(peak_flops, str) and peak_flops != "auto":
            raise ValueError(f"peak_flops must be a number, 'auto' or null, got {peak_flops!r}")
        self.peak_flops = peak_flops
        self.warmup_steps = warmup_steps
        self.flops_per_token: float | None = None
        self.head_flops_per_token = 0.0
        self.device_peak: float | None = None
        self.mfu_basis: str | None = None
        self._window = torch.zeros(4, dtype=torch.float64)  # tokens, samples, seconds, FLOPs
        self._totals = torch.zeros(4, dtype=torch.float64)  # after warm-up, all ranks
        self._started: float | None = None
        self._steps = StepTracker()
        self._world_size = 1
        self.last: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flops_per_token = training_flops_per_token(pl_module.model)
        self.head_flops_per_token = head_flops_per_token(pl_module.model)
        self._world_size = trainer.world_size
        if self.peak_flops == "auto":
            dtype = compute_dtype(str(trainer.precision), next(pl_module.parameters()).dtype)
            self.device_peak, self.mfu_basis = peak_flops(pl_module.device, dtype)
            log.info("MFU against the %s: %.1f GFLOP/s", self.mfu_basis, self.device_peak / 1e9)
        elif self.peak_flops is not None:
            self.device_peak, self.mfu_basis = float(self.peak_flops), "peak set in the config (peak_flops)"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._steps.start(trainer)

    def _pause(self) -> None:
        if self._started is not None:
            self._window[2] += time.perf_counter() - self._started
            self._started = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if isinstance(pl_module, TrainedBatch):
            batch = pl_module.trained_batch(batch)
        tokens = float(non_padding_tokens(batch))
        self._window[0] += tokens
        self._window[1] += len(example_task_ids(batch))
        self._window[3] += self.flops_per_token * tokens - self.head_flops_per_token * self._skipped_head(
            pl_module, batch, tokens
        )
        if not (self._steps.stepped(trainer) and self._steps.closes_window(trainer)):
            return
        self._pause()
        window = trainer.strategy.reduce(self._window.to(pl_module.device), reduce_op="sum").cpu()
        tokens, samples, flops = float(window[0]), float(window[1]), float(window[3])
        seconds = float(window[2]) / trainer.world_size  # each rank timed the same wall-clock window
        peak = torch.tensor(float(peak_memory_bytes(pl_module.device)), device=pl_module.device)
        peak_gb = float(trainer.strategy.reduce(peak, reduce_op="max")) / 1e9
        self.last = {
            TOKENS_PER_S: tokens / seconds,
            SAMPLES_PER_S: samples / seconds,
            PEAK_MEM_GB: peak_gb,
        }
        if self.device_peak:
            self.last[MFU] = flops / seconds / (self.device_peak * trainer.world_size)
        for name, value in self.last.items():
            pl_module.log(name, value, on_step=True, on_epoch=False)
        if trainer.global_step - trainer.log_every_n_steps >= self.warmup_steps:  # the window began after warm-up
            self._totals += torch.tensor([tokens, samples, seconds, flops], dtype=torch.float64)
        self._window.zero_()
        self._started = time.perf_counter()

    def _skipped_head(self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor], tokens: float) -> float:
        """Tokens of ``batch`` the LM head did not run on (0 unless the module says where it runs)."""
        if not self.head_flops_per_token or not isinstance(pl_module, HeadPositions):
            return 0.0
        positions = pl_module.head_positions(batch)
        return 0.0 if positions is None else tokens - float(positions)

    def summary(self) -> dict[str, Any]:
        """``perf``: tokens/s, samples/s and MFU averaged over the run after warm-up, and peak memory;
        ``flops_per_token`` is the run's average (the head counted where it ran)."""
        tokens, samples, seconds, flops = self._totals.tolist()
        if not seconds:
            return {"perf": {}}
        perf: dict[str, Any] = {
            "tokens_per_s": tokens / seconds,
            "samples_per_s": samples / seconds,
            "timed_tokens": int(tokens),
            "timed_seconds": seconds,
            "flops_per_token": flops / tokens,
            "peak_mem_gb": self.last.get(PEAK_MEM_GB),
        }
        if self.device_peak:
            mfu = flops / seconds / (self.device_peak * self._world_size)
            perf.update(peak_flops=self.device_peak, mfu=mfu, mfu_basis=self.mfu_basis)
        return {"perf": perf}

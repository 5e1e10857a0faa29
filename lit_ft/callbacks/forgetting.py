"""Catastrophic-forgetting check: score general ability before, during and after fine-tuning, and compare."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal

import lightning as L
import torch
from peft import PeftModel

from lit_ft.callbacks.steps import weights_step
from lit_ft.data.readers import load_passages
from lit_ft.eval.general import GeneralAbility, load_questions
from lit_ft.eval.harness import harness_available, run_harness
from lit_ft.utils.distributed import local_part, reshard
from lit_ft.utils.metric_names import MCQ_ACC, PROSE_PPL, forgetting_metric
from lit_ft.utils.protocols import TaskData

log = logging.getLogger(__name__)


class ForgettingCheck(L.Callback):
    """Score the model on a general-ability set and log how far fine-tuning moved it.

    The set (``data/general/``, or any files in the same format) gives multiple-choice accuracy by
    log-likelihood (``mcq_acc``, ``mcq_acc_norm``, ``mcq_acc_<subject>``) and perplexity on prose (``prose_ppl``);
    see :mod:`lit_ft.eval.general`. Scores are taken:

    - before training (``on_train_start``): the baseline. For LoRA runs the same model with its adapter disabled
      (peft's ``disable_adapter()``; no second copy of the model);
    - after each validation during ``fit`` (``every_validation``): logged as ``forgetting/<metric>`` and
      ``forgetting/<metric>_delta`` (now minus baseline) with the validation metrics, and, as reference lines for
      a dashboard, ``forgetting/<metric>_baseline`` and ``forgetting/<metric>_threshold`` (:meth:`thresholds`);
    - at the end of ``fit``, after :class:`~lit_ft.callbacks.EarlyStoppingWithRestore` has put back the best
      weights: the final numbers, in :meth:`summary` (``summary.json`` under ``forgetting``).

    Scores are cached by a checksum of the trainable weights, so the end score costs nothing when the weights are
    those of a validation check (the last one, or the best one restored). Each rank scores a slice of the set
    and the counts are summed over ranks: the batches are dealt out in turn, and a rank dealt one fewer repeats
    one and discards it, so every rank runs the same forwards in number (under FSDP2 or ZeRO-3 each forward
    gathers the weights from all ranks). lm-eval tasks run whole on every rank and rank 0's scores are kept.

    A threshold that is crossed logs a warning (``on_exceed="warn"``) or stops training (``"stop"``).

    Args:
        mcq_file / prose_file: JSONL files (``{"question", "choices", "answer", "subject"}`` / ``{"text"}``).
        max_questions / max_passages: score an evenly spread subset (a CPU-sized check); None for all.
        max_batch_tokens: padded tokens per forward while scoring.
        max_acc_drop: largest allowed fall of ``mcq_acc`` below the baseline, as a fraction (0.02 = 2 points).
        max_ppl_increase: largest allowed relative rise of ``prose_ppl`` (0.1 = +10%).
        lm_eval_tasks: lm-evaluation-harness task names, scored too when ``lm_eval`` is installed (a warning and
            the shipped set only when it is not); ``lm_eval_limit`` caps examples per task.
    """

    def __init__(
        self,
        mcq_file: str | None = None,
        prose_file: str | None = None,
        max_questions: int | None = None,
        max_passages: int | None = None,
        max_batch_tokens: int = 2048,
        max_acc_drop: float | None = 0.02,
        max_ppl_increase: float | None = None,
        on_exceed: Literal["warn", "stop"] = "warn",
        every_validation: bool = True,
        lm_eval_tasks: Sequence[str] = (),
        lm_eval_limit: int | None = None,
    ) -> None:
        if on_exceed not in ("warn", "stop"):
            raise ValueError(f"on_exceed must be 'warn' or 'stop', got {on_exceed!r}")
        if not (mcq_file or prose_file or lm_eval_tasks):
            raise ValueError("ForgettingCheck needs mcq_file, prose_file or lm_eval_tasks")
        self.questions = load_questions(mcq_file, max_questions) if mcq_file else []
        self.passages = load_passages(prose_file, max_passages) if prose_file else []
        self.max_batch_tokens = max_batch_tokens
        self.max_acc_drop, self.max_ppl_increase, self.on_exceed = max_acc_drop, max_ppl_increase, on_exceed
        self.every_validation = every_validation
        self.lm_eval_tasks, self.lm_eval_limit = list(lm_eval_tasks), lm_eval_limit
        if self.lm_eval_tasks and not harness_available():
            log.warning(
                "lm_eval is not installed: skipping lm_eval_tasks %s and scoring the shipped general set only "
                "(pip install lm-eval to run them)",
                self.lm_eval_tasks,
            )
            self.lm_eval_tasks = []
        self.scorer: GeneralAbility | None = None
        self.tokenizer = None
        self.baseline: dict[str, float] | None = None
        self.final: dict[str, float] | None = None
        self.checks: list[dict[str, Any]] = []
        self.exceeded: list[dict[str, Any]] = []
        self._cache: dict[tuple[float, float], dict[str, float]] = {}
        self.seconds = 0.0  # time spent scoring

    # --- scoring -------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.scorer is None:
            datamodule: TaskData = trainer.datamodule
            self.tokenizer = datamodule.tokenizer
            self.scorer = GeneralAbility(self.tokenizer, self.questions, self.passages, self.max_batch_tokens)

    @staticmethod
    def _checksum(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[float, float]:
        """Sum and absolute sum of the trainable weights, over all ranks (identifies the weights being scored; each
        rank adds up its own shard of sharded weights)."""
        local = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
        reshard(pl_module)
        for parameter in pl_module.parameters():
            if parameter.requires_grad:
                weights = local_part(parameter.detach())  # on the CPU when FSDP2 offloads it
                local += torch.stack([weights.sum(), weights.abs().sum()]).double().to(local.device)
        total = trainer.strategy.reduce(local, reduce_op="sum")
        return float(total[0]), float(total[1])

    @torch.no_grad()
    def score(self, trainer: L.Trainer, pl_module: L.LightningModule, base: bool = False) -> dict[str, float]:
        """Scores of the current model (``base``: with its adapter disabled, when it has one)."""
        model = pl_module.model
        key = None if base else self._checksum(trainer, pl_module)
        if key in self._cache:
            return self._cache[key]
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        adapter_off = model.disable_adapter() if base and isinstance(model, PeftModel) else nullcontext()
        with adapter_off:
            sums = self.scorer.sums(model, trainer.global_rank, trainer.world_size)
            sums = trainer.strategy.reduce(sums.to(pl_module.device), reduce_op="sum").cpu()
            scores = self.scorer.metrics(sums)
            if self.lm_eval_tasks:  # on every rank (sharded weights: each forward is a collective), rank 0's kept
                extra = run_harness(model, self.tokenizer, self.lm_eval_tasks, self.lm_eval_limit)
                scores.update(trainer.strategy.broadcast(extra, src=0))
        model.train(was_training)
        self.seconds += time.perf_counter() - started
        if key is not None:
            self._cache[key] = scores
        return scores

    def deltas(self, scores: dict[str, float]) -> dict[str, float]:
        return {name: value - self.baseline[name] for name, value in scores.items() if name in (self.baseline or {})}

    def thresholds(self) -> dict[str, float]:
        """The values :meth:`problems` warns past, per watched score: ``mcq_acc`` below ``baseline - max_acc_drop``,
        ``prose_ppl`` above ``baseline * (1 + max_ppl_increase)``; a threshold set to None is left out."""
        limits = {}
        if self.max_acc_drop is not None and MCQ_ACC in (self.baseline or {}):
            limits[MCQ_ACC] = self.baseline[MCQ_ACC] - self.max_acc_drop
        if self.max_ppl_increase is not None and PROSE_PPL in (self.baseline or {}):
            limits[PROSE_PPL] = self.baseline[PROSE_PPL] * (1 + self.max_ppl_increase)
        return limits

    def problems(self, scores: dict[str, float]) -> list[str]:
        """The thresholds ``scores`` cross, in words."""
        found = []
        if self.max_acc_drop is not None and "mcq_acc" in scores:
            drop = self.baseline["mcq_acc"] - scores["mcq_acc"]
            if drop > self.max_acc_drop:
                found.append(
                    f"mcq_acc fell by {100 * drop:.1f} points ({self.baseline['mcq_acc']:.3f} -> "
                    f"{scores['mcq_acc']:.3f}; allowed {100 * self.max_acc_drop:.1f})"
                )
        if self.max_ppl_increase is not None and "prose_ppl" in scores:
            rise = scores["prose_ppl"] / self.baseline["prose_ppl"] - 1
            if rise > self.max_ppl_increase:
                found.append(
                    f"prose_ppl rose by {100 * rise:.1f}% ({self.baseline['prose_ppl']:.2f} -> "
                    f"{scores['prose_ppl']:.2f}; allowed {100 * self.max_ppl_increase:.1f}%)"
                )
        return found

    # --- reporting -----------------------------------------------------------------------------------------
    def _named(self, scores: dict[str, float]) -> dict[str, float]:
        """Scores, their deltas and the reference lines (baseline and threshold of the watched scores), by logged
        name."""
        named = {forgetting_metric(name): value for name, value in scores.items()}
        named.update({forgetting_metric(name, "delta"): value for name, value in self.deltas(scores).items()})
        limits = self.thresholds()
        for name in limits:
            named[forgetting_metric(name, "baseline")] = self.baseline[name]
            named[forgetting_metric(name, "threshold")] = limits[name]
        return named

    def _record(self, trainer: L.Trainer, stage: str, scores: dict[str, float]) -> list[str]:
        step = weights_step(trainer)
        self.checks.append({"stage": stage, "step": step, **scores})
        deltas = self.deltas(scores)
        if trainer.is_global_zero:
            shown = ", ".join(
                f"{name}={scores[name]:.4g} ({deltas.get(name, 0.0):+.4g})"
                for name in ("mcq_acc", "mcq_acc_norm", "prose_ppl")
                if name in scores
            )
            log.info("Forgetting check (%s, step %d): %s", stage, step, shown)
        problems = self.problems(scores) if stage != "baseline" else []
        if problems:
            self.exceeded.append({"stage": stage, "step": step, "problems": problems})
            action = "stopping training" if self.on_exceed == "stop" and stage == "validation" else "warning only"
            log.warning("Forgetting threshold crossed at step %d (%s): %s", step, action, "; ".join(problems))
        return problems

    @staticmethod
    def _log_to_loggers(trainer: L.Trainer, metrics: dict[str, float]) -> None:
        """For hooks where ``LightningModule.log`` is not allowed (train start, fit end)."""
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
                logger.save()

    def _score_baseline(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.baseline is None:  # a resumed run keeps the baseline of its first start
            self.baseline = self.score(trainer, pl_module, base=True)
            self._record(trainer, "baseline", self.baseline)
            self._log_to_loggers(trainer, self._named(self.baseline))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_fit_start: sharded strategies (FSDP, DeepSpeed) restore a checkpoint after that hook.
        self._score_baseline(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every_validation or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        scores = self.score(trainer, pl_module)
        for name, value in self._named(scores).items():
            pl_module.log(name, value, on_step=False, on_epoch=True)
        if self._record(trainer, "validation", scores) and self.on_exceed == "stop":
            trainer.should_stop = True

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._score_baseline(trainer, pl_module)  # a fit with no step to take never started training
        self.final = self.score(trainer, pl_module)
        self._record(trainer, "final", self.final)
        self._log_to_loggers(trainer, self._named(self.final))

    def summary(self) -> dict[str, Any]:
        """``forgetting``: baseline, final, delta (final - baseline), every check, and thresholds crossed."""
        return {
            "forgetting": {
                "questions": len(self.questions),
                "passages": len(self.passages),
                "lm_eval_tasks": self.lm_eval_tasks,
                "baseline": self.baseline,
                "final": self.final,
                "delta": self.deltas(self.final) if self.final and self.baseline else None,
                "checks": self.checks,
                "exceeded": self.exceeded,
                "seconds": round(self.seconds, 1),
            }
        }

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "checks": self.checks, "exceeded": self.exceeded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.baseline = state_dict.get("baseline")
        self.checks, self.exceeded = list(state_dict.get("checks", [])), list(state_dict.get("exceeded", []))

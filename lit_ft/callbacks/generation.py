"""Greedy generations for fixed prompts, before training, at validation checks and at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from rich.console import Console
from rich.table import Table

from lit_ft.callbacks.steps import weights_step
from lit_ft.data.prompts import Prompt, load_prompts, prompt_text, prompts_from_records
from lit_ft.eval.generation import generate_answers
from lit_ft.utils.protocols import TableLogger, TaskData


def prompt_tail(text: str, max_chars: int = 160) -> str:
    """The end of a long prompt (where the question usually is) for the terminal table: about the last
    ``max_chars`` characters, from a word boundary, after an ellipsis."""
    if len(text) <= max_chars:
        return text
    tail = text[-max_chars:]
    if text[-max_chars - 1] == " ":  # the cut falls on a word boundary already
        return "…" + tail
    _, space, rest = tail.partition(" ")
    return "…" + (rest if space and rest else tail)


class GenerationSamples(L.Callback):
    """Generate greedy answers for a fixed list of prompts and show them.

    Runs before training (``before``), after each validation (``during``) when ``every_validation`` is set,
    and at the end of training (``after``). Samples are printed as a table, appended to
    ``<output_dir>/samples.jsonl``, sent to W&B as a table when a ``WandbLogger`` is attached, and returned
    by :meth:`summary` for ``summary.json``.

    Chat prompts (``{"messages": [...]}``) go through the chat template; text prompts (``{"text": ...}``) are
    continued as they are. In a distributed run every rank generates every answer, in step with the others
    (see :meth:`generate`); rank 0 shows and writes them.

    Args:
        prompts_file: JSONL of prompts (``data/legal/val_prompts.jsonl``); or give ``prompts`` inline.
        val_prompts: also take this many prompts from the validation split of the datamodule (in turn from
            each task type; the held-out answer is the reference).
        max_new_tokens: answer length cap.
    """

    def __init__(
        self,
        prompts_file: str | None = None,
        prompts: list[Prompt] | None = None,
        val_prompts: int = 0,
        max_new_tokens: int = 48,
        every_validation: bool = False,
        output_dir: str | None = None,
    ) -> None:
        self.prompts = list(prompts or []) + (load_prompts(prompts_file) if prompts_file else [])
        self.val_prompts, self._val_prompts_added = val_prompts, False
        self.max_new_tokens, self.every_validation = max_new_tokens, every_validation
        self.output_dir = Path(output_dir) if output_dir else None
        self.samples: dict[str, list[str]] = {}

    def generate(self, pl_module: L.LightningModule, tokenizer, synced: bool = False) -> list[str]:
        """Greedy answers to :attr:`prompts`, one prompt at a time (no padding under the training model's
        attention backend), encoded as training and ``eval.py`` encode them. ``synced``: every rank of a
        distributed run calls this (see :func:`~lit_ft.eval.generation.generate_answers`)."""
        return generate_answers(
            pl_module.model,
            tokenizer,
            self.prompts,
            max_new_tokens=self.max_new_tokens,
            batch_size=1,
            synced_gpus=synced,
            device=pl_module.device,
        )

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.prompts:
            return
        datamodule: TaskData = trainer.datamodule
        answers = self.generate(pl_module, datamodule.tokenizer, synced=trainer.world_size > 1)
        self.samples[stage] = answers
        if not trainer.is_global_zero:
            return
        step = weights_step(trainer)
        rows = [
            {
                "stage": stage,
                "step": step,
                "task_type": p.get("task_type"),
                "prompt": prompt_text(p),
                "answer": a,
                "reference": p.get("reference"),
            }
            for p, a in zip(self.prompts, answers)
        ]
        output_dir = self.output_dir or Path(trainer.default_root_dir)
        with (output_dir / "samples.jsonl").open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        self._show(rows, stage, step, trainer)

    def _show(self, rows: list[dict[str, Any]], stage: str, step: int, trainer: L.Trainer) -> None:
        table = Table(title=f"Generation samples ({stage}, step {step})", show_lines=True)
        for column in ("task_type", "prompt", "answer", "reference"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(row["task_type"] or "", prompt_tail(row["prompt"]), row["answer"], row["reference"] or "")
        Console().print(table)
        for logger in trainer.loggers:
            if isinstance(logger, TableLogger):  # WandbLogger
                columns = ["stage", "step", "task_type", "prompt", "answer", "reference"]
                logger.log_table(key="samples", columns=columns, data=[[r[c] for c in columns] for r in rows])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.val_prompts and not self._val_prompts_added:
            datamodule: TaskData = trainer.datamodule
            self.prompts += prompts_from_records(datamodule.val_records(), self.val_prompts)
            self._val_prompts_added = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_fit_start: sharded strategies (FSDP, DeepSpeed) restore a checkpoint after that hook.
        if "before" not in self.samples:  # a resumed run keeps the samples of its first start
            self._record(trainer, pl_module, "before")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_validation and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._record(trainer, pl_module, "during")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, pl_module, "after")

    def summary(self) -> dict[str, Any]:
        """Per prompt: the prompt, reference and answers before and after training."""
        return {
            "samples": [
                {
                    "prompt": prompt_text(p),
                    "reference": p.get("reference"),
                    **{stage: answers[i] for stage, answers in self.samples.items() if stage != "during"},
                }
                for i, p in enumerate(self.prompts)
            ]
        }

    def state_dict(self) -> dict[str, Any]:
        return {"samples": self.samples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.samples = dict(state_dict.get("samples", {}))

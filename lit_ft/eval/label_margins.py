"""How well a model separates the two labels of a binary label task, whatever its lean toward either.

Greedy answers of a label task (``FLAG: NON-STANDARD`` or ``FLAG: STANDARD``) say which label a model prefers, not
how well it tells the rows apart: a model that ranks every NON-STANDARD clause above every STANDARD one can still
answer STANDARD to all of them. This module scores both label answers after each row's prompt by their summed
log-probability (as lm-eval scores multiple choice: :func:`~lit_ft.eval.general.continuation_logprobs`):

    margin = log p(positive answer | prompt) - log p(negative answer | prompt)

and reports, over the rows of one task type:

- ``auc``: the ROC AUC of the margins against the reference labels (0.5: no separation; 1: every positive row
  above every negative one), which no shift of the lean changes;
- ``accuracy_at_zero``: the accuracy of answering the label with the higher log-probability (close to the greedy
  answer when the two answers share all but their label tokens);
- ``best_accuracy`` (and its ``best_threshold``): the best accuracy one threshold on the margin reaches on these
  same rows, so an optimistic ceiling of what changing the lean alone can give.

A row's prompt is its conversation up to its last trainable answer (with the generation prompt), or a plain-text
row's prompt; its label is the answer its reference begins with. A reference that begins with neither is refused,
naming the row.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torchmetrics.functional.classification import binary_auroc
from transformers import PreTrainedTokenizerBase

from lit_ft.data.formats import parse_sft_row
from lit_ft.data.readers import DataError, read_records
from lit_ft.data.rows import ChatExample
from lit_ft.data.tokenize import render_text
from lit_ft.eval.general import continuation_logprobs, continuations_after
from lit_ft.utils.io import write_json_atomic


@dataclass(frozen=True)
class LabelledPrompt:
    """A row's prompt text and whether its reference is the positive label."""

    prompt: str
    positive: bool


@dataclass(frozen=True)
class Separation:
    """The margins' summary (see the module docstring)."""

    rows: int
    positives: int
    auc: float
    accuracy_at_zero: float
    best_accuracy: float
    best_threshold: float


def labelled_prompts(
    path: str | Path, tokenizer: PreTrainedTokenizerBase, task_type: str | None, positive: str, negative: str
) -> list[LabelledPrompt]:
    """The rows of ``path`` of ``task_type`` (all rows when None) as prompts with their reference's label."""
    # the longer answer first, so that one label answer being the start of the other cannot misfile a row
    answers = sorted([(positive, True), (negative, False)], key=lambda pair: -len(pair[0]))
    prompts = []
    for record in read_records(path):
        example = parse_sft_row(record)
        if task_type is not None and example.task_type != task_type:
            continue
        if isinstance(example, ChatExample):
            last = example.trainable_turns[-1]
            prompt = render_text(tokenizer, example.messages[:last], add_generation_prompt=True, tools=example.tools)
            reference = str(example.messages[last]["content"]).strip()
        else:
            prompt, reference = example.prompt, example.completion.strip()
        label = next((is_positive for answer, is_positive in answers if reference.startswith(answer)), None)
        if label is None:
            raise DataError(
                record.where, f"the reference {reference[:60]!r} begins with neither {positive!r} nor {negative!r}"
            )
        prompts.append(LabelledPrompt(prompt, label))
    if not prompts:
        raise ValueError(f"{path} has no rows of task type {task_type!r}")
    return prompts


def label_margins(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    positive: str,
    negative: str,
    max_batch_tokens: int = 2048,
) -> torch.Tensor:
    """``log p(positive | prompt) - log p(negative | prompt)`` for each prompt: [N] float64."""
    items = [
        continuations_after(tokenizer, prompt, [positive, negative], add_special_tokens=False) for prompt in prompts
    ]
    scores = continuation_logprobs(model, items, tokenizer.pad_token_id, max_batch_tokens)
    return torch.stack([score[0] - score[1] for score in scores])


def separation(margins: torch.Tensor, is_positive: torch.Tensor) -> Separation:
    """AUC, accuracy at margin 0 and the best accuracy of one threshold (a row is called positive when its margin
    is >= the threshold; every margin, and one above them all, is tried)."""
    labels = is_positive.bool()
    if labels.all() or not labels.any():
        raise ValueError(f"all {len(labels)} rows have the same label: a ranking needs rows of both labels")
    thresholds = torch.cat([margins.unique(), margins.max().reshape(1) + 1])
    correct = ((margins[None, :] >= thresholds[:, None]) == labels[None, :]).sum(-1)
    best = int(correct.argmax())
    return Separation(
        rows=len(margins),
        positives=int(labels.sum()),
        auc=float(binary_auroc(margins.float(), labels.long())),
        accuracy_at_zero=float(((margins > 0) == labels).float().mean()),
        best_accuracy=float(correct[best]) / len(margins),
        best_threshold=float(thresholds[best]),
    )


def print_separation(result: Separation, title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for name in asdict(result):
        table.add_column(name, justify="right")
    table.add_row(*(f"{value:.3f}" if isinstance(value, float) else str(value) for value in asdict(result).values()))
    (console or Console()).print(table)


def main(argv: Sequence[str] | None = None) -> Separation:
    parser = argparse.ArgumentParser(prog="python -m lit_ft.eval.label_margins", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model: alias, folder (a run's model/) or cached hub id")
    parser.add_argument("data", help="rows with reference answers (any SFT format lit-ft reads)")
    parser.add_argument("--task-type", default="flag", help="the rows of this task type (default: flag)")
    parser.add_argument("--positive", default="FLAG: NON-STANDARD", help="the positive label's answer")
    parser.add_argument("--negative", default="FLAG: STANDARD", help="the negative label's answer")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)

    from lit_ft.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model).eval()
    prompts = labelled_prompts(args.data, tokenizer, args.task_type, args.positive, args.negative)
    margins = label_margins(model, tokenizer, [p.prompt for p in prompts], args.positive, args.negative)
    result = separation(margins, torch.tensor([p.positive for p in prompts]))
    print_separation(
        result, f"{args.model} on {args.data} ({args.task_type}): {args.positive!r} against {args.negative!r}"
    )
    if args.json:
        write_json_atomic(Path(args.json), {**asdict(result), "model": args.model, "data": args.data})
    return result


if __name__ == "__main__":
    main()

"""Pairwise judging of two models' answers by a judge causal LM, both orders scored, with a length-controlled win rate.

Method. For a request and answers ``a`` (model A) and ``b`` (model B), the judge reads a prompt that shows the
request (the conversation before the answer), the reference answer when there is one (reference-guided judging,
as in MT-Bench, Zheng et al., 2023), then the two answers labelled ``A`` and ``B``, and is asked for one letter.
The judge's verdict is read from its next-token distribution rather than sampled: ``P(first) = softmax(logit_A,
logit_B)[A]``, the two letters' logits after the chat template's assistant header.

Position bias. Small judges prefer a position (often the first). Each pair is judged in both orders and the
preference for model A is the mean of ``P(first)`` with ``a`` first and ``1 - P(first)`` with ``b`` first, so a
judge that always says "A" gives exactly 0.5, and swapping the models gives exactly ``1 - preference``.
``position_bias`` (mean ``P(first)`` minus 0.5 over all judgments) and ``consistency`` (share of pairs whose two
orders agree on the winner) say how much the judge leaned on the position.

Length control. Judges, small ones especially, favour longer answers. The length-controlled win rate follows
AlpacaEval 2 (Dubois et al., 2024, "Length-Controlled AlpacaEval"), without its per-instruction term: fit a
logistic regression of the preference on the normalised length difference,
``p_i ~ sigmoid(b + w * tanh((len(a_i) - len(b_i)) / std(len(a) - len(b))))`` (lengths in characters, soft
targets, a small L2 penalty for stability), and report ``sigmoid(b)``: the win rate predicted when both answers
have the same length.

A weak signal. With the embedded 135M model as judge, verdicts are close to chance on hard comparisons and
follow surface features; treat its win rates as a smoke test of the pipeline and a coarse signal when two models
differ a lot, never as ground truth. Use a larger judge (``--judge`` any causal LM you can load) and the blind
A/B page for people (``lit_ft.eval.blind_ab``) for decisions.

CLI: ``python -m lit_ft.eval.judge logs/eval_base/generations.jsonl logs/eval_lora/generations.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_ft.data.rows import Message
from lit_ft.utils.io import write_json_atomic

JUDGE_TEMPLATE = """Two assistants answered the same request. Decide which answer is better: correct, complete, \
in the format the request asks for, and no longer than needed.

[Request]
{request}
{reference}
[Answer A]
{first}

[Answer B]
{second}

Which answer is better? Reply with one letter: A or B."""
REFERENCE_TEMPLATE = "\n[Reference answer]\n{reference}\n"


def render_request(messages: Sequence[Message] | None, text: str | None = None) -> str:
    """The conversation before the answer as plain ``User: ...`` / ``Assistant: ...`` lines (system left out)."""
    if messages is None:
        return text or ""
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages if m["role"] != "system")


@dataclass(frozen=True)
class Comparison:
    request: str
    a: str
    b: str
    reference: str | None = None


class PairwiseJudge:
    """Ask ``model`` which of two answers is better and read ``P(first)`` off its next-token logits.

    Args:
        template: the judging prompt, with ``{request}``, ``{reference}``, ``{first}``, ``{second}``.
        use_reference: show the reference answer (when the comparison has one).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        template: str = JUDGE_TEMPLATE,
        use_reference: bool = True,
        batch_size: int = 8,
    ) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.use_reference, self.batch_size = use_reference, batch_size
        letters = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in ("A", "B")]
        if any(len(ids) != 1 for ids in letters):
            raise ValueError(f"the judge's tokenizer splits 'A' or 'B' into several tokens: {letters}")
        self.letter_ids = [ids[0] for ids in letters]

    def prompt_ids(self, comparison: Comparison, first: str, second: str) -> list[int]:
        reference = (
            REFERENCE_TEMPLATE.format(reference=comparison.reference)
            if self.use_reference and comparison.reference
            else ""
        )
        content = self.template.format(request=comparison.request, reference=reference, first=first, second=second)
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def p_first(self, prompts: Sequence[list[int]]) -> torch.Tensor:
        """``P(A)`` normalised over the letters ``A`` and ``B``, [N] float64, for each tokenised judging prompt."""
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.model.eval()
        result = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            length = max(len(p) for p in batch)
            # left padding: every prompt ends at the last position, the only one whose logits are needed
            mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in batch], device=device)
            ids = torch.tensor([[pad] * (length - len(p)) + p for p in batch], device=device)
            logits = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=False,
                logits_to_keep=1,
            ).logits[:, -1, self.letter_ids]
            result.append(torch.softmax(logits.double(), dim=-1)[:, 0].cpu())
        return torch.cat(result) if result else torch.empty(0, dtype=torch.float64)

    def compare(self, comparisons: Sequence[Comparison]) -> dict[str, torch.Tensor]:
        """Per comparison: ``preference`` (P(a better than b), order-averaged), ``p_first_ab`` (P(first) with
        ``a`` first) and ``p_first_ba`` (with ``b`` first), each [N] float64."""
        forward = [self.prompt_ids(c, c.a, c.b) for c in comparisons]
        swapped = [self.prompt_ids(c, c.b, c.a) for c in comparisons]
        p = self.p_first(forward + swapped)
        p_ab, p_ba = p[: len(comparisons)], p[len(comparisons) :]
        return {"preference": (p_ab + (1 - p_ba)) / 2, "p_first_ab": p_ab, "p_first_ba": p_ba}


def length_controlled_win_rate(
    preferences: torch.Tensor, length_a: torch.Tensor, length_b: torch.Tensor, l2: float = 1e-4
) -> float:
    """``sigmoid(b)`` of the logistic fit ``p ~ sigmoid(b + w * tanh(d / std(d)))``, ``d = length_a - length_b``.

    Fitted by Newton's method on the mean binary cross-entropy with soft targets ``p`` plus
    ``l2 * (b^2 + w^2) / 2``. When all lengths differ by the same amount, the length term carries no
    information (``tanh(d / std)`` is set to 0) and the result is the plain logistic mean.
    """
    p = preferences.double()
    diff = (length_a - length_b).double()
    std = diff.std() if diff.numel() > 1 else torch.tensor(0.0, dtype=torch.float64)
    x = torch.tanh(diff / std) if std > 0 else torch.zeros_like(diff)
    features = torch.stack([torch.ones_like(x), x], dim=1)
    theta = torch.zeros(2, dtype=torch.float64)
    for _ in range(100):
        mu = torch.sigmoid(features @ theta)
        gradient = features.T @ (mu - p) / len(p) + l2 * theta
        hessian = (features.T * (mu * (1 - mu))) @ features / len(p) + l2 * torch.eye(2, dtype=torch.float64)
        step = torch.linalg.solve(hessian, gradient)
        theta -= step
        if step.abs().max() < 1e-10:
            break
    return float(torch.sigmoid(theta[0]))


def win_rates(preference: torch.Tensor, length_a: torch.Tensor, length_b: torch.Tensor) -> dict[str, float]:
    """``win_rate`` (mean soft preference), ``lc_win_rate``, and hard counts (a tie is a preference of 0.5)."""
    wins = int((preference > 0.5 + 1e-9).sum())
    losses = int((preference < 0.5 - 1e-9).sum())
    return {
        "n": len(preference),
        "win_rate": float(preference.mean()),
        "lc_win_rate": length_controlled_win_rate(preference, length_a, length_b),
        "wins": wins,
        "losses": losses,
        "ties": len(preference) - wins - losses,
    }


def read_generations(path: str | Path) -> dict[str, dict[str, Any]]:
    """Rows of an eval ``generations.jsonl`` keyed by ``id`` (a repeated id is an error: pairing would lose rows)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    keyed = {row["id"]: row for row in rows}
    if len(keyed) != len(rows):
        repeated = sorted({row["id"] for row in rows if sum(r["id"] == row["id"] for r in rows) > 1})
        raise ValueError(
            f"{path}: prompt ids occur more than once ({', '.join(repeated[:5])}); answers cannot be paired"
        )
    return keyed


def paired_rows(file_a: str | Path, file_b: str | Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Rows of two generation files for the same prompts (matched by ``id``), in ``file_a``'s order."""
    rows_a, rows_b = read_generations(file_a), read_generations(file_b)
    pairs = [(row, rows_b[key]) for key, row in rows_a.items() if key in rows_b]
    if not pairs:
        raise ValueError(f"{file_a} and {file_b} share no prompt ids: were they generated from the same data?")
    return pairs


def judge_files(
    judge: PairwiseJudge, file_a: str | Path, file_b: str | Path, max_items: int | None = None
) -> dict[str, Any]:
    """Judge the answers of two eval runs to the same prompts; overall and per-task win rates of A over B."""
    pairs = paired_rows(file_a, file_b)[:max_items]
    comparisons = [
        Comparison(
            render_request(a.get("messages"), a.get("text")), a["generation"], b["generation"], a.get("reference")
        )
        for a, b in pairs
    ]
    result = judge.compare(comparisons)
    preference, p_ab, p_ba = result["preference"], result["p_first_ab"], result["p_first_ba"]
    length_a = torch.tensor([len(c.a) for c in comparisons], dtype=torch.float64)
    length_b = torch.tensor([len(c.b) for c in comparisons], dtype=torch.float64)
    tasks = [a["task_type"] for a, _ in pairs]
    report: dict[str, Any] = {
        "a": str(file_a),
        "b": str(file_b),
        "overall": {
            **win_rates(preference, length_a, length_b),
            "position_bias": float(torch.cat([p_ab, p_ba]).mean() - 0.5),
            "consistency": float(((p_ab > 0.5) != (p_ba > 0.5)).double().mean()),
        },
        "per_task": {},
        "items": [
            {
                "id": a["id"],
                "task_type": a["task_type"],
                "preference_a": float(pref),
                "p_first_ab": float(x),
                "p_first_ba": float(y),
            }
            for (a, _), pref, x, y in zip(pairs, preference, p_ab, p_ba)
        ],
    }
    for task in sorted(set(tasks)):
        index = torch.tensor([t == task for t in tasks])
        report["per_task"][task] = win_rates(preference[index], length_a[index], length_b[index])
    return report


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"Judge: A = {report['a']}  vs  B = {report['b']}")
    for column in ("task_type", "n", "win rate A", "LC win rate A", "A/tie/B"):
        table.add_column(column, justify="left" if column == "task_type" else "right")
    for task, row in [*report["per_task"].items(), ("all", report["overall"])]:
        table.add_row(
            task,
            str(row["n"]),
            f"{row['win_rate']:.3f}",
            f"{row['lc_win_rate']:.3f}",
            f"{row['wins']}/{row['ties']}/{row['losses']}",
        )
    console = console or Console()
    console.print(table)
    overall = report["overall"]
    console.print(
        f"position bias {overall['position_bias']:+.3f} (P(first) - 0.5), order consistency "
        f"{overall['consistency']:.2f}. A small judge is a weak signal: see docs/evaluation.md."
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m lit_ft.eval.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="generations.jsonl of model A (an eval run's output)")
    parser.add_argument("b", help="generations.jsonl of model B (same data)")
    parser.add_argument("--judge", default="smollm2-135m-instruct", help="judge model: alias, folder or cached hub id")
    parser.add_argument("--no-reference", action="store_true", help="do not show the reference answer to the judge")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-items", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the report here (default: judge.json beside A)")
    args = parser.parse_args(argv)

    from lit_ft.models import load_model, load_tokenizer

    judge = PairwiseJudge(
        load_model(args.judge),
        load_tokenizer(args.judge),
        use_reference=not args.no_reference,
        batch_size=args.batch_size,
    )
    report = judge_files(judge, args.a, args.b, args.max_items)
    report["judge"] = args.judge
    out = Path(args.out) if args.out else Path(args.a).parent / "judge.json"
    write_json_atomic(out, report)
    print_report(report)
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()

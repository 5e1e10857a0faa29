"""Score general ability: multiple-choice accuracy by log-likelihood and perplexity on plain prose.

The scoring of ``data/general/README.md``, the way lm-evaluation-harness scores ARC/MMLU:

- multiple choice: context ``"Question: {question}\\nAnswer:"``, continuation ``" " + choice``; each choice is
  scored by the summed log-probability of its continuation tokens given the context tokens (the continuation
  tokens are those of ``tokenize(context + continuation)`` after the tokens of ``tokenize(context)``, as in
  lm-eval); the prediction is the best-scored choice (``acc``), or the best score divided by the
  continuation's length in characters (``acc_norm``);
- prose: ``ppl = exp(sum of token NLLs / predicted tokens)`` over all passages, plain text, no chat template
  (the first token of a passage is predicted only when the tokenizer adds a BOS token).

Scoring is batched under a token budget; the context of a question is encoded once and its KV cache shared by
the four choices, so a question costs its context plus a few tokens per choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from lit_ft.data.readers import DataError, evenly_spaced, read_records


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str


def load_questions(path: str | Path, limit: int | None = None) -> list[Question]:
    """Rows ``{"question", "choices": [...], "answer": index, "subject"?}`` of a JSONL file."""
    questions = []
    for record in read_records(path):
        row = record.row
        choices = row.get("choices")
        if not isinstance(row.get("question"), str) or not isinstance(choices, list) or len(choices) < 2:
            raise DataError(record.where, "expected 'question' (string) and 'choices' (a list of at least 2 strings)")
        if not isinstance(row.get("answer"), int) or not 0 <= row["answer"] < len(choices):
            raise DataError(record.where, f"must be an index into the {len(choices)} choices", "answer")
        questions.append(Question(row["question"], tuple(choices), row["answer"], row.get("subject", "all")))
    return evenly_spaced(questions, limit)


@dataclass(frozen=True)
class Continuations:
    """A context and the continuations scored after it (token ids); the context is encoded once for all of them."""

    context: list[int]
    continuations: list[list[int]]


def continuations_after(
    tokenizer: PreTrainedTokenizerBase, context: str, texts: list[str], add_special_tokens: bool = True
) -> Continuations:
    """lm-eval's split of each text: ``tokens(context + text)[len(tokens(context)):]`` after ``tokens(context)``,
    the context tokenised once; a context rendered by a chat template already holds its special tokens
    (``add_special_tokens=False``)."""
    context_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    texts_ids = tokenizer([context + text for text in texts], add_special_tokens=add_special_tokens)["input_ids"]
    return Continuations(context_ids, [ids[len(context_ids) :] for ids in texts_ids])


def token_batches(items: list[Continuations], max_batch_tokens: int) -> list[list[int]]:
    """Indices of ``items`` grouped by similar size so each group's padded tokens stay within ``max_batch_tokens``."""
    order = sorted(range(len(items)), key=lambda i: (len(items[i].context), max(map(len, items[i].continuations))))
    batches: list[list[int]] = []
    for index in order:
        group = ([*batches[-1], index]) if batches else [index]
        context = max(len(items[i].context) for i in group)
        rows = sum(len(items[i].continuations) for i in group)
        longest = max(len(c) for i in group for c in items[i].continuations)
        if batches and len(group) * context + rows * longest <= max_batch_tokens:
            batches[-1] = group
        else:
            batches.append([index])
    return batches


def _pad(sequences: list[list[int]], value: int, left: bool) -> torch.Tensor:
    length = max(len(s) for s in sequences)
    return torch.tensor(
        [[value] * (length - len(s)) + s if left else s + [value] * (length - len(s)) for s in sequences]
    )


def rank_batches(batches: list[list[int]], rank: int, world_size: int) -> list[tuple[list[int], bool]]:
    """The batches rank ``rank`` runs, ``(batch, keep)``: every ``world_size``-th batch from ``rank``, then, when it
    was dealt one batch fewer than rank 0, a repeat of the first batch (``keep=False``: its result is discarded).

    Every rank so runs the same number of batches. Under FSDP2 or ZeRO-3 each forward gathers the sharded weights
    from all ranks: a rank with a forward more than another would wait for it forever.
    """
    mine = [(batch, True) for batch in batches[rank::world_size]]
    missing = -(-len(batches) // world_size) - len(mine)  # rank 0 is dealt the most: ceil(batches / world_size)
    return mine + [(batches[0], False)] * missing if missing else mine


@torch.no_grad()
def continuation_logprobs(
    model: torch.nn.Module,
    items: list[Continuations],
    pad_token_id: int,
    max_batch_tokens: int = 2048,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor | None]:
    """Summed log-probability of each continuation given its context: one [len(continuations)] tensor per item.

    Two forwards per batch: the contexts (left-padded, so all end at the last position) fill a KV cache and give
    the prediction of each continuation's first token; the cache is repeated once per continuation and the
    continuations (right-padded) run on top of it.

    With ``world_size`` > 1 the batches (made as for one process) are dealt out to the ranks by
    :func:`rank_batches`, and the items of other ranks' batches are ``None``: every rank runs the same forwards
    in number, and each item is scored in the same batch, so with the same numbers, as by one process.
    """
    device = next(model.parameters()).device
    results: list[torch.Tensor | None] = [None] * len(items)
    for batch, keep in rank_batches(token_batches(items, max_batch_tokens), rank, world_size):
        contexts = [items[i].context for i in batch]
        context_mask = _pad([[1] * len(c) for c in contexts], 0, left=True).to(device)
        out = model(
            input_ids=_pad(contexts, pad_token_id, left=True).to(device),
            attention_mask=context_mask,
            position_ids=(context_mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        owner = torch.tensor([k for k, i in enumerate(batch) for _ in items[i].continuations], device=device)
        cache = out.cache
        cache.reorder_cache(owner)  # one copy of its context's cache per continuation
        continuations = [c for i in batch for c in items[i].continuations]
        targets = _pad(continuations, pad_token_id, left=False).to(device)
        mask = _pad([[1] * len(c) for c in continuations], 0, left=False).to(device)
        logits = model(
            input_ids=targets,
            attention_mask=torch.cat([context_mask[owner], mask], dim=1),
            position_ids=context_mask.sum(-1)[owner, None] + torch.arange(targets.shape[1], device=device),
            cache=cache,
            use_cache=True,
        ).logits
        # token j of a continuation is predicted by position j-1 of its forward, token 0 by the context's last one
        logits = torch.cat([out.logits[owner, -1:], logits[:, :-1]], dim=1)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view(targets.shape)
        scores = -(nll * mask).sum(-1).double().cpu()
        if not keep:
            continue
        start = 0
        for i in batch:
            results[i] = scores[start : start + len(items[i].continuations)]
            start += len(items[i].continuations)
    return results


class GeneralAbility:
    """A tokenised general-ability set and its scores for a model.

    :meth:`sums` returns additive statistics (so ranks can score a slice each and add them up) and
    :meth:`metrics` turns them into ``mcq_acc``, ``mcq_acc_norm``, ``mcq_acc_<subject>`` and ``prose_ppl``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        questions: list[Question],
        passages: list[str],
        max_batch_tokens: int = 2048,
    ) -> None:
        self.questions, self.passages = questions, passages
        self.subjects = sorted({q.subject for q in questions})
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.max_batch_tokens = max_batch_tokens
        self.mcq: list[Continuations] = []
        for q in questions:
            self.mcq.append(
                continuations_after(tokenizer, f"Question: {q.question}\nAnswer:", [f" {c}" for c in q.choices])
            )
        self.prose: list[Continuations] = []
        for text in passages:  # the first token is the context: it is predicted by nothing (or by a BOS token)
            ids = tokenizer(text)["input_ids"]
            self.prose.append(Continuations(ids[:1], [ids[1:]]))

    @property
    def num_stats(self) -> int:
        return 3 * len(self.subjects) + 2

    def sums(self, model: torch.nn.Module, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Scores of this rank's share of the batches (see :func:`continuation_logprobs`), [num_stats] float64.
        Call it on every rank (under sharded weights each forward is a collective); their sum is the one-process
        result.

        Layout: per subject ``[questions, correct, correct_norm]``, then ``[prose NLL, prose tokens]``.
        """
        stats = torch.zeros(self.num_stats, dtype=torch.float64)
        batching = {"max_batch_tokens": self.max_batch_tokens, "rank": rank, "world_size": world_size}
        scores = continuation_logprobs(model, self.mcq, self.pad_token_id, **batching)
        for question, logprobs in zip(self.questions, scores):
            if logprobs is None:  # another rank's
                continue
            chars = torch.tensor([len(choice) + 1 for choice in question.choices], dtype=torch.float64)
            base = 3 * self.subjects.index(question.subject)
            stats[base] += 1
            stats[base + 1] += int(logprobs.argmax()) == question.answer
            stats[base + 2] += int((logprobs / chars).argmax()) == question.answer
        scores = continuation_logprobs(model, self.prose, self.pad_token_id, **batching)
        mine = [(passage, logprobs) for passage, logprobs in zip(self.prose, scores) if logprobs is not None]
        if mine:
            stats[-2] = -torch.cat([logprobs for _, logprobs in mine]).sum()
            stats[-1] = sum(len(passage.continuations[0]) for passage, _ in mine)
        return stats

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """Accuracies (fractions, 0.25 is chance for 4 choices) and prose perplexity from summed statistics."""
        per_subject = sums[:-2].view(len(self.subjects), 3)
        total = per_subject.sum(0)
        values: dict[str, float] = {}
        if total[0] > 0:
            values["mcq_acc"] = float(total[1] / total[0])
            values["mcq_acc_norm"] = float(total[2] / total[0])
            for subject, (count, correct, _) in zip(self.subjects, per_subject.tolist()):
                values[f"mcq_acc_{subject}"] = correct / count
        if sums[-1] > 0:
            values["prose_ppl"] = float(torch.exp(sums[-2] / sums[-1]))
        return values

    def score(self, model: torch.nn.Module) -> dict[str, float]:
        """All metrics, in one process."""
        return self.metrics(self.sums(model))

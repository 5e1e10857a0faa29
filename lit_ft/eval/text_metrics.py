"""Reference-based text metrics of one generation: exact match, token F1 (SQuAD) and ROUGE-L, via torchmetrics.

- ``exact_match`` and ``token_f1`` are SQuAD's (Rajpurkar et al., 2016; ``torchmetrics.functional.text.squad``):
  both texts are lower-cased and stripped of punctuation, the articles a/an/the and extra whitespace; exact match
  is 1 when the normalised texts are equal; token F1 is the harmonic mean of precision and recall of the bag of
  normalised words (``2 * common / (len(prediction) + len(reference))``). Punctuation is deleted, not replaced by
  spaces: the house-notation separators `` | `` do not count, and ``OBL[Customer>Supplier]`` is one word,
  ``oblcustomersupplier``, so the direction of an obligation still matters.
- ``rouge_l`` is the ROUGE-L F-measure (Lin, 2004; ``torchmetrics.functional.text.rouge``): with ``L`` the length
  of the longest common subsequence of the two word sequences (lower-cased, non-alphanumerics as spaces),
  ``P = L / len(prediction)``, ``R = L / len(reference)``, ``F = 2PR / (P + R)``. It rewards words in the right
  order, not only the right words. (ROUGE-L needs no nltk; only ROUGE-Lsum and stemming would.)

All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchmetrics.functional.text import rouge_score, squad

TEXT_METRICS = ("exact_match", "token_f1", "rouge_l")


def _squad(prediction: str, reference: str) -> dict[str, float]:
    scores = squad(
        {"prediction_text": prediction, "id": "0"}, {"answers": {"answer_start": [0], "text": [reference]}, "id": "0"}
    )
    return {"exact_match": float(scores["exact_match"]) / 100, "token_f1": float(scores["f1"]) / 100}


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the SQuAD-normalised texts are equal, else 0.0."""
    return _squad(prediction, reference)["exact_match"]


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the bags of SQuAD-normalised words."""
    return _squad(prediction, reference)["token_f1"]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common word subsequence)."""
    return float(rouge_score(prediction, reference, rouge_keys="rougeL")["rougeL_fmeasure"])


class TextOverlap:
    """Task metric: the mean over examples of the chosen reference-based scores (and their number ``n``).

    Args:
        metrics: any of ``exact_match``, ``token_f1``, ``rouge_l``.
    """

    def __init__(self, metrics: Sequence[str] = TEXT_METRICS) -> None:
        unknown = set(metrics) - set(TEXT_METRICS)
        if unknown:
            raise ValueError(f"unknown text metrics {sorted(unknown)} (known: {', '.join(TEXT_METRICS)})")
        self.metrics = list(metrics)

    def example(self, prediction: str, reference: str) -> dict[str, Any]:
        scores = _squad(prediction, reference) if {"exact_match", "token_f1"} & set(self.metrics) else {}
        if "rouge_l" in self.metrics:
            scores["rouge_l"] = rouge_l(prediction, reference)
        return {name: scores[name] for name in self.metrics}

    def aggregate(self, examples: Sequence[dict[str, Any]]) -> dict[str, float | int]:
        if not examples:
            return {}
        return {
            "n": len(examples),
            **{name: sum(e[name] for e in examples) / len(examples) for name in self.metrics},
        }

"""LongBench-v2 scoring, as THUDM/LongBench ``pred.py`` (answer extraction) and ``result.py``
(accuracy) do it at commit 2e00731."""

from __future__ import annotations

import re
from collections.abc import Sequence

_BRACKETED = re.compile(r"The correct answer is \(([A-D])\)")
_BARE = re.compile(r"The correct answer is ([A-D])")
DECIMALS = 1  # result.py: round(100 * accuracy, 1)


def extract_answer(response: str) -> str | None:
    """pred.py extract_answer: markdown stars dropped, then "(X)" or a bare letter after the phrase."""
    response = response.replace("*", "")
    match = _BRACKETED.search(response) or _BARE.search(response)
    return match.group(1) if match else None


def score(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Accuracy x100 rounded to 1 decimal; a prediction with no extractable letter is wrong
    (result.py with ``compensated = False``, its default)."""
    correct = sum(extract_answer(p.strip()) == refs[0] for p, refs in zip(predictions, answers, strict=True))
    return round(100 * correct / len(predictions), DECIMALS)

"""RULER scoring, as NVIDIA/RULER scripts/eval/evaluate.py and eval/synthetic/constants.py do it."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_PRINTABLE = re.compile(r"[\x00-\x1f]")
# Task families scored with string_match_part; every other RULER task uses string_match_all.
PART_MATCH_PREFIXES = ("qa",)


def postprocess(prediction: str) -> str:
    """evaluate.py postprocess_pred: strip, control characters to newlines, strip."""
    return _NON_PRINTABLE.sub("\n", prediction.strip()).strip()


def string_match_all(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over samples of the fraction of references found (case-insensitive), x100, 2 decimals."""
    total = sum(
        sum(r.lower() in p.lower() for r in refs) / len(refs)
        for p, refs in zip(predictions, references, strict=True)
    )
    return round(total / len(predictions) * 100, 2)


def string_match_part(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over samples of whether any reference is found (case-insensitive), x100, 2 decimals."""
    total = sum(
        max(r.lower() in p.lower() for r in refs) for p, refs in zip(predictions, references, strict=True)
    )
    return round(total / len(predictions) * 100, 2)


def score(task: str, predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    metric = string_match_part if task.startswith(PART_MATCH_PREFIXES) else string_match_all
    return metric([postprocess(p) for p in predictions], answers)

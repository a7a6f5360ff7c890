"""Scores identical to each benchmark's official code on the same predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spark_bench.metrics import longbench, ruler

BENCHMARKS = ("longbench", "ruler")


def score(
    benchmark: str,
    task: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[str] | None = None,
) -> float:
    """The official score (0-100) of ``predictions`` for one task of ``benchmark``."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answer lists")
    if not predictions:
        raise ValueError(f"no predictions to score for {benchmark}/{task}")
    if benchmark == "ruler":
        return ruler.score(task, predictions, answers)
    if benchmark == "longbench":
        return longbench.score(task, predictions, answers, all_classes)
    raise ValueError(f"benchmark {benchmark!r} is not one of {list(BENCHMARKS)}")


def average(task_scores: Mapping[str, float]) -> float:
    """``scores.average``: the unweighted mean over the run's tasks (each task counts once,
    whatever its sample count), as the paper's LongBench and RULER averages are computed."""
    if not task_scores:
        raise ValueError("no task scores to average")
    return round(sum(task_scores.values()) / len(task_scores), 2)

"""Scores identical to each benchmark's official code on the same predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spark_bench.metrics import longbench, longbench_v2, ruler

BENCHMARKS = ("longbench", "longbench_v2", "ruler")
# The official breakdowns and their order: LongBench-E length buckets per task (eval.py
# scorer_e), LongBench-v2 difficulty and length over all questions (result.py).
BREAKDOWN_GROUPS = {
    "longbench": ("0-4k", "4-8k", "8k+"),
    "longbench_v2": ("easy", "hard", "short", "medium", "long"),
}
ALL_TASKS = "all"  # the breakdown key of a benchmark whose breakdown spans all tasks


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
    if benchmark == "longbench_v2":
        return longbench_v2.score(predictions, answers)
    raise ValueError(f"benchmark {benchmark!r} is not one of {list(BENCHMARKS)}")


def average(task_scores: Mapping[str, float]) -> float:
    """The unweighted mean over tasks (each task counts once, whatever its sample count), as the
    paper's LongBench and RULER averages are computed."""
    if not task_scores:
        raise ValueError("no task scores to average")
    return round(sum(task_scores.values()) / len(task_scores), 2)


@dataclass(frozen=True)
class Row:
    """One answered sample, as scoring needs it."""

    task: str
    prediction: str
    answers: Sequence[str]
    all_classes: Sequence[str] | None = None
    labels: tuple[str, ...] = ()


def summarize(
    benchmark: str, tasks: Sequence[str], rows: Sequence[Row]
) -> tuple[dict[str, float], dict[str, dict[str, float | None]]]:
    """(scores per task plus the benchmark's official ``average``, the official breakdown).

    The average is the mean of task scores for LongBench and RULER, and for LongBench-v2 the
    accuracy over all questions (result.py's "Overall"). The breakdown maps a task (LongBench-E)
    or ``"all"`` (LongBench-v2) to group scores; a group with no samples is null (where the
    official code gives NaN or divides by zero); it is empty where samples carry no labels.
    """
    by_task = {task: [r for r in rows if r.task == task] for task in tasks}
    scores = {task: _score_rows(benchmark, task, group) for task, group in by_task.items()}
    if benchmark == "longbench_v2":
        scores["average"] = _score_rows(benchmark, ALL_TASKS, list(rows))
    else:
        scores["average"] = average(scores)
    groups = BREAKDOWN_GROUPS.get(benchmark, ())
    if not groups or not any(r.labels for r in rows):
        return scores, {}
    scopes = {ALL_TASKS: list(rows)} if benchmark == "longbench_v2" else by_task
    breakdown = {
        scope: {
            group: _score_rows(benchmark, scope, members) if members else None
            for group in groups
            for members in [[r for r in scope_rows if group in r.labels]]
        }
        for scope, scope_rows in scopes.items()
    }
    return scores, breakdown


def _score_rows(benchmark: str, task: str, rows: Sequence[Row]) -> float:
    classes = next((r.all_classes for r in rows if r.all_classes), None)
    return score(benchmark, task, [r.prediction for r in rows], [r.answers for r in rows], classes)

"""What a benchmark is to spark_bench: one object that knows its tasks, data and scoring.

A benchmark module (``spark_bench/tasks/<name>.py``) defines ``BENCHMARK``, an instance of a
``Benchmark`` subclass; the registry (``spark_bench.tasks``) finds it. Everything else asks the
registry: the config checks (task names, data-file layout), the runner (samples), scoring and
``python -m spark_bench.tasks``. The official prompt, generation length and chat-template rule
of each task travel on its ``Sample``s, set by ``load``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase as Tokenizer

from spark_bench.data.sample import Sample

log = logging.getLogger(__name__)

# The breakdown key of a benchmark whose official sub-scores span all its tasks (LongBench-v2).
ALL_TASKS = "all"

Scores = dict[str, float]
Breakdown = dict[str, dict[str, float | None]]
Dataset = Mapping[str, Any]  # the dataset config node (conf/dataset/<name>.yaml, with overrides)
Texts = Sequence[str]
Answers = Sequence[Sequence[str]]


@dataclass(frozen=True)
class Row:
    """One answered sample, as scoring needs it."""

    task: str
    prediction: str
    answers: Sequence[str]
    all_classes: Sequence[str] | None = None
    labels: tuple[str, ...] = ()


def mean_of_tasks(task_scores: Mapping[str, float]) -> float:
    """The unweighted mean over tasks (each task counts once, whatever its sample count), as the
    paper's LongBench and RULER averages are computed."""
    if not task_scores:
        raise ValueError("no task scores to average")
    return round(sum(task_scores.values()) / len(task_scores), 2)


class Benchmark(ABC):
    """A benchmark: subclass it, fill in the class attributes and the abstract methods.

    name: the ``dataset.name`` of its config (``conf/dataset/<name>.yaml``).
    tasks: every task, in the order tables list them.
    breakdown_groups: the official sub-score labels (``Sample.labels``), in order; () for none.
    breakdown_over_all_tasks: sub-scores over all questions together, keyed ``"all"``, instead
        of per task.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    breakdown_groups: ClassVar[tuple[str, ...]] = ()
    breakdown_over_all_tasks: ClassVar[bool] = False

    # -- what a benchmark declares ----------------------------------------------------------
    @abstractmethod
    def load(
        self, dataset: Dataset, tokenizer: Tokenizer, seed: int, max_samples: int | None
    ) -> list[Sample]:
        """The samples of ``dataset["tasks"]``, at most ``max_samples`` per task, in a stable order."""

    @abstractmethod
    def max_new_tokens(self, task: str) -> int:
        """The task's official generation length."""

    def uses_chat_template(self, task: str) -> bool:
        """Whether the task's prompt goes through the model's chat template."""
        self.check_task(task)
        return True

    @abstractmethod
    def metric(self, task: str) -> str:
        """The name of the task's official metric (for listings)."""

    @abstractmethod
    def score_task(self, task: str, predictions: Texts, answers: Answers, all_classes: Texts | None) -> float:
        """The official score (0-100) of one task's predictions (or, with ``ALL_TASKS``, of all)."""

    def build_prompt(self, task: str, record: Mapping[str, Any]) -> str:
        """The full prompt the official code builds for one raw record (before chat template and
        truncation), for benchmarks read from records."""
        raise ValueError(f"{self.name} builds no prompt from a record (its prompts are generated)")

    def check_dataset(self, dataset: Mapping[str, Any], tasks: tuple[str, ...]) -> None:
        """Raise ValueError, naming the field, where ``dataset``'s fields or local files are not
        what ``load`` reads: checked before anything loads. Nothing to check by default."""
        return

    def average(self, task_scores: Mapping[str, float], rows: Sequence[Row]) -> float:
        """The benchmark's official headline number: the mean over tasks."""
        return mean_of_tasks(task_scores)

    # -- what the harness calls -------------------------------------------------------------
    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(f"{self.name} task {task!r} is not one of {list(self.tasks)}")

    def samples(
        self, dataset: Dataset, tokenizer: Tokenizer, seed: int, max_samples: int | None
    ) -> list[Sample]:
        """``load``, checked: every task of ``dataset["tasks"]`` holds a sample."""
        samples = self.load(dataset, tokenizer, seed, max_samples)
        empty = [t for t in dataset["tasks"] if not any(s.task == t for s in samples)]
        if empty:
            source = dataset.get("data_dir") or "its source"
            raise ValueError(
                f"dataset {self.name}: task(s) {empty} hold no samples in {source}; "
                "drop them from dataset.tasks"
            )
        log.info("%d samples from %s (%s)", len(samples), self.name, ", ".join(dataset["tasks"]))
        return samples

    def score(
        self, task: str, predictions: Texts, answers: Answers, all_classes: Texts | None = None
    ) -> float:
        """The official score (0-100) of ``predictions`` for one task."""
        if len(predictions) != len(answers):
            raise ValueError(f"{len(predictions)} predictions for {len(answers)} answer lists")
        if not predictions:
            raise ValueError(f"no predictions to score for {self.name}/{task}")
        return self.score_task(task, predictions, answers, all_classes)

    def summarize(self, tasks: Sequence[str], rows: Sequence[Row]) -> tuple[Scores, Breakdown]:
        """(scores per task plus the official ``average``, the official breakdown).

        The breakdown maps a task, or ``"all"`` for a benchmark whose sub-scores span all tasks,
        to group scores; a group with no samples is null (where the official code gives NaN or
        divides by zero); it is empty where samples carry no labels."""
        by_task = {task: [r for r in rows if r.task == task] for task in tasks}
        scores = {task: self._score_rows(task, group) for task, group in by_task.items()}
        scores["average"] = self.average(scores, rows)
        if not self.breakdown_groups or not any(r.labels for r in rows):
            return scores, {}
        scopes = {ALL_TASKS: list(rows)} if self.breakdown_over_all_tasks else by_task
        breakdown = {
            scope: {
                group: self._score_rows(scope, members) if members else None
                for group in self.breakdown_groups
                for members in [[r for r in scope_rows if group in r.labels]]
            }
            for scope, scope_rows in scopes.items()
        }
        return scores, breakdown

    def _score_rows(self, task: str, rows: Sequence[Row]) -> float:
        classes = next((r.all_classes for r in rows if r.all_classes), None)
        return self.score(task, [r.prediction for r in rows], [r.answers for r in rows], classes)

"""LongBench-v2 (arXiv 2412.15204): 503 four-choice questions in six domains, 0-shot prompt.

Its headline number is the accuracy over all questions (result.py "Overall"), and its official
sub-scores (difficulty, length) span all domains. Loader and prompt: ``spark_bench.data.longbench_v2``;
answer extraction and accuracy: ``spark_bench.metrics.longbench_v2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spark_bench.data import longbench_v2 as data
from spark_bench.data.sample import Sample
from spark_bench.metrics import longbench_v2 as metrics
from spark_bench.tasks.base import ALL_TASKS, Answers, Benchmark, Dataset, Row, Texts, Tokenizer

METRIC = "accuracy"  # of the extracted choice letter (LongBench-v2 result.py)


class LongBenchV2(Benchmark):
    name = "longbench_v2"
    tasks = data.TASKS
    breakdown_groups = (*data.DIFFICULTIES, *data.LENGTHS)  # result.py's order
    breakdown_over_all_tasks = True

    def load(
        self, dataset: Dataset, tokenizer: Tokenizer, seed: int, max_samples: int | None
    ) -> list[Sample]:
        records = data.load_records(dataset.get("data_dir"))
        return [s for task in dataset["tasks"] for s in data.to_samples(task, records, max_samples)]

    def check_task(self, task: str) -> None:
        data.check_task(task)

    def max_new_tokens(self, task: str) -> int:
        self.check_task(task)
        return data.MAX_NEW_TOKENS

    def uses_chat_template(self, task: str) -> bool:
        self.check_task(task)
        return data.CHAT_TEMPLATE

    def metric(self, task: str) -> str:
        return METRIC

    def score_task(self, task: str, predictions: Texts, answers: Answers, all_classes: Texts | None) -> float:
        return metrics.score(predictions, answers)

    def average(self, task_scores: Mapping[str, float], rows: Sequence[Row]) -> float:
        """The accuracy over all questions, not the mean of the domains' accuracies."""
        return self._score_rows(ALL_TASKS, list(rows))

    def build_prompt(self, task: str, record: Mapping[str, Any]) -> str:
        self.check_task(task)
        return data.build_prompt(record)

    def check_dataset(self, dataset: Mapping[str, Any], tasks: tuple[str, ...]) -> None:
        data_dir = dataset.get("data_dir")
        if data_dir is None:
            return
        if not Path(data_dir).is_dir():
            raise ValueError(f"dataset.data_dir={data_dir} is not a directory")
        if data.find_data_file(data_dir) is None:
            raise ValueError(
                f"dataset.data_dir={data_dir} holds none of {list(data.DATA_FILES)}: "
                "it must hold the official release (data.json) or a jsonl/parquet copy of it"
            )


BENCHMARK = LongBenchV2()

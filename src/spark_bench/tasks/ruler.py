"""RULER (arXiv 2404.06654): 13 synthetic tasks at a chosen context length.

Samples are generated locally (or read from the kvpress authors' set or a local copy) by
``spark_bench.data.ruler``; scoring is ``spark_bench.metrics.ruler``. Every prompt goes through
the chat template, as kvpress runs RULER.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spark_bench.checks import check_positive_int
from spark_bench.data import ruler as data
from spark_bench.data.sample import Sample
from spark_bench.metrics import ruler as metrics
from spark_bench.tasks.base import Answers, Benchmark, Dataset, Texts, Tokenizer


class Ruler(Benchmark):
    name = "ruler"
    tasks = data.TASKS

    def load(
        self, dataset: Dataset, tokenizer: Tokenizer, seed: int, max_samples: int | None
    ) -> list[Sample]:
        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

        return data.load(dataset, count_tokens, seed, max_samples)

    def max_new_tokens(self, task: str) -> int:
        return data.tokens_to_generate(task)

    def uses_chat_template(self, task: str) -> bool:
        data.task(task)
        return True

    def metric(self, task: str) -> str:
        data.task(task)
        return "string_match_part" if task.startswith(metrics.PART_MATCH_PREFIXES) else "string_match_all"

    def score_task(self, task: str, predictions: Texts, answers: Answers, all_classes: Texts | None) -> float:
        return metrics.score(task, predictions, answers)

    def check_dataset(self, dataset: Mapping[str, Any], tasks: tuple[str, ...]) -> None:
        source, data_dir, qa_dir = dataset.get("source"), dataset.get("data_dir"), dataset.get("qa_dir")
        if source not in data.SOURCES:
            raise ValueError(f"dataset.source={source!r} is not one of {list(data.SOURCES)}")
        if source == "local":
            if data_dir is None:
                raise ValueError("dataset.source=local reads dataset.data_dir, which is null: set it")
            length_dir = Path(data_dir) / str(dataset["context_length"])
            if not length_dir.is_dir():
                raise ValueError(
                    f"dataset.data_dir={data_dir} has no folder {dataset['context_length']}/ for "
                    f"dataset.context_length={dataset['context_length']}"
                )
        elif data_dir is not None:
            raise ValueError(
                f"dataset.data_dir={data_dir} is read only with dataset.source=local (source={source})"
            )
        if qa_dir is not None:
            missing = [f for f in data.qa.FILES.values() if not (Path(qa_dir) / f).is_file()]
            if missing:
                raise ValueError(f"dataset.qa_dir={qa_dir} lacks RULER's {missing}")
        for field in ("context_length", "num_samples"):
            unit = " (tokens)" if field == "context_length" else ""
            check_positive_int(f"dataset.{field}", dataset.get(field), unit)


BENCHMARK = Ruler()

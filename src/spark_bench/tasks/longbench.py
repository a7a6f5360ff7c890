"""LongBench (arXiv 2308.14508) and LongBench-E: 21 tasks, official prompts, lengths and metrics.

The task table, prompts and loaders are in ``spark_bench.data.longbench``, the official metrics
in ``spark_bench.metrics.longbench``; this module declares them to the harness.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spark_bench.data import longbench as data
from spark_bench.data.sample import Sample
from spark_bench.metrics import longbench as metrics
from spark_bench.tasks.base import Answers, Benchmark, Dataset, Texts, Tokenizer


class LongBench(Benchmark):
    name = "longbench"
    tasks = tuple(data.TASKS)
    # LongBench-E length buckets per task (eval.py scorer_e), on samples of dataset.longbench_e.
    breakdown_groups = tuple(label for _, _, label in data.LONGBENCH_E_BUCKETS)

    def load(
        self, dataset: Dataset, tokenizer: Tokenizer, seed: int, max_samples: int | None
    ) -> list[Sample]:
        longbench_e = dataset.get("longbench_e", False)
        samples: list[Sample] = []
        for task in dataset["tasks"]:
            records = data.load_records(
                task, dataset.get("data_dir"), longbench_e, dataset.get("hub_id", data.HUB_ID)
            )
            samples += data.to_samples(task, records[:max_samples], longbench_e)
        return samples

    def max_new_tokens(self, task: str) -> int:
        return data.task(task).max_new_tokens

    def uses_chat_template(self, task: str) -> bool:
        """Official LongBench skips the chat template for trec, triviaqa, samsum, lsht, lcc and
        repobench-p."""
        return data.task(task).chat_template

    def metric(self, task: str) -> str:
        return data.task(task).metric

    def score_task(self, task: str, predictions: Texts, answers: Answers, all_classes: Texts | None) -> float:
        return metrics.score(task, predictions, answers, all_classes)

    def build_prompt(self, task: str, record: Mapping[str, Any]) -> str:
        return data.build_prompt(task, record)

    def check_dataset(self, dataset: Mapping[str, Any], tasks: tuple[str, ...]) -> None:
        longbench_e = dataset.get("longbench_e", False)
        if not isinstance(longbench_e, bool):
            raise ValueError(f"dataset.longbench_e={longbench_e!r} must be true or false")
        if longbench_e:
            absent = [t for t in tasks if t not in data.LONGBENCH_E_TASKS]
            if absent:
                raise ValueError(
                    f"dataset.longbench_e=true: LongBench-E has no set for {absent}; "
                    f"use dataset.tasks=[{','.join(data.LONGBENCH_E_TASKS)}] or a part of it"
                )
        data_dir = dataset.get("data_dir")
        if data_dir is None:
            _check_hub(dataset.get("hub_id"), tasks)
            return
        if not Path(data_dir).is_dir():
            raise ValueError(f"dataset.data_dir={data_dir} is not a directory")
        configs = [data.config_name(t, longbench_e) for t in tasks]
        held = {c: data.local_files(data_dir, c) for c in configs}
        missing = [file.name for folder, file in held.values() if not (folder.is_dir() or file.is_file())]
        if missing:
            raise ValueError(
                f"dataset.data_dir={data_dir} lacks {missing}: it must hold the official <task>.jsonl files "
                f"(data.zip) or a download of {data.HUB_ID} (a <task>/ folder of parquet files)"
            )


def _check_hub(hub_id: str | None, tasks: tuple[str, ...]) -> None:
    if hub_id in data.SCRIPT_HUB_IDS:
        raise ValueError(
            f"dataset.hub_id={hub_id} is a loading-script dataset, which datasets >= 4 refuses to run: "
            f"use dataset.hub_id={data.HUB_ID} (the parquet copy the SparK paper reads, the default) "
            "or dataset.data_dir=<the official data.zip, unzipped>"
        )
    if hub_id == data.HUB_ID:
        absent = [t for t in tasks if t not in data.HUB_TASKS]
        if absent:
            raise ValueError(
                f"dataset.hub_id={hub_id} holds the 16 English tasks only, not {absent}: "
                "set dataset.data_dir=<the official data.zip, unzipped> for them"
            )


BENCHMARK = LongBench()

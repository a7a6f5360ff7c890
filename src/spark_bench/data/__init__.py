"""Benchmark samples: loading, generation, and what each task officially needs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from spark_bench.data import longbench, ruler
from spark_bench.data.sample import Sample

__all__ = ["Sample", "build_prompt", "load_samples", "max_new_tokens", "uses_chat_template"]

log = logging.getLogger(__name__)

BENCHMARKS = ("longbench", "ruler")


def load_samples(
    dataset: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int, max_samples: int | None
) -> list[Sample]:
    """The samples of ``dataset.tasks``, at most ``max_samples`` per task, in a stable order."""
    name = dataset["name"]
    samples: list[Sample] = []
    if name == "ruler":
        per_task = dataset["num_samples"] if max_samples is None else min(max_samples, dataset["num_samples"])

        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

        for task in dataset["tasks"]:
            samples += ruler.generate(task, per_task, dataset["context_length"], count_tokens, seed)
    elif name == "longbench":
        for task in dataset["tasks"]:
            records = longbench.load_records(task, dataset.get("data_dir"), dataset.get("longbench_e", False))
            samples += longbench.to_samples(task, records[:max_samples] if max_samples else records)
    else:
        raise ValueError(f"dataset {name!r} has no loader yet; available: {list(BENCHMARKS)}")
    if not samples:
        raise ValueError(f"dataset {name} tasks {list(dataset['tasks'])} hold no samples")
    log.info("%d samples from %s (%s)", len(samples), name, ", ".join(dataset["tasks"]))
    return samples


def build_prompt(benchmark: str, task: str, record: Mapping[str, Any]) -> str:
    """The full prompt the official code builds for one raw record (before chat template and
    truncation)."""
    if benchmark == "longbench":
        return longbench.build_prompt(task, record)
    raise ValueError(f"build_prompt knows 'longbench'; got benchmark {benchmark!r}")


def max_new_tokens(benchmark: str, task: str) -> int:
    """The official generation length of a task."""
    if benchmark == "ruler" and task in ruler.NIAH_TASKS:
        return ruler.TOKENS_TO_GENERATE
    if benchmark == "longbench":
        return longbench.task(task).max_new_tokens
    raise ValueError(f"unknown task {task!r} for benchmark {benchmark!r}")


def uses_chat_template(benchmark: str, task: str) -> bool:
    """Whether the task's prompt is wrapped in the model's chat template (official LongBench
    skips it for trec, triviaqa, samsum, lsht, lcc, repobench-p; kvpress applies it to RULER)."""
    if benchmark == "longbench":
        return longbench.task(task).chat_template
    max_new_tokens(benchmark, task)  # validates the names
    return True

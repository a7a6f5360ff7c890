"""Benchmark samples: loading, generation, and what each task officially needs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from spark_bench.data import longbench, longbench_v2, ruler
from spark_bench.data.sample import Sample

__all__ = ["Sample", "build_prompt", "load_samples", "max_new_tokens", "uses_chat_template"]

log = logging.getLogger(__name__)

BENCHMARKS = ("longbench", "longbench_v2", "ruler")


def load_samples(
    dataset: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int, max_samples: int | None
) -> list[Sample]:
    """The samples of ``dataset.tasks``, at most ``max_samples`` per task, in a stable order."""
    name = dataset["name"]
    samples: list[Sample] = []
    if name == "ruler":

        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

        samples = ruler.load(dataset, count_tokens, seed, max_samples)
    elif name == "longbench":
        longbench_e = dataset.get("longbench_e", False)
        for task in dataset["tasks"]:
            records = longbench.load_records(
                task, dataset.get("data_dir"), longbench_e, dataset.get("hub_id", longbench.HUB_ID)
            )
            samples += longbench.to_samples(task, records[:max_samples], longbench_e)
    elif name == "longbench_v2":
        records = longbench_v2.load_records(dataset.get("data_dir"))
        for task in dataset["tasks"]:
            samples += longbench_v2.to_samples(task, records, max_samples)
    else:
        raise ValueError(f"dataset {name!r} has no loader yet; available: {list(BENCHMARKS)}")
    empty = [t for t in dataset["tasks"] if not any(s.task == t for s in samples)]
    if empty:
        source = dataset.get("data_dir") or "its source"
        raise ValueError(
            f"dataset {name}: task(s) {empty} hold no samples in {source}; drop them from dataset.tasks"
        )
    log.info("%d samples from %s (%s)", len(samples), name, ", ".join(dataset["tasks"]))
    return samples


def build_prompt(benchmark: str, task: str, record: Mapping[str, Any]) -> str:
    """The full prompt the official code builds for one raw record (before chat template and
    truncation)."""
    if benchmark == "longbench":
        return longbench.build_prompt(task, record)
    if benchmark == "longbench_v2":
        longbench_v2.check_task(task)
        return longbench_v2.build_prompt(record)
    raise ValueError(
        f"build_prompt knows ['longbench', 'longbench_v2'] (RULER prompts are generated); got {benchmark!r}"
    )


def max_new_tokens(benchmark: str, task: str) -> int:
    """The official generation length of a task."""
    if benchmark == "ruler":
        return ruler.tokens_to_generate(task)
    if benchmark == "longbench":
        return longbench.task(task).max_new_tokens
    if benchmark == "longbench_v2":
        longbench_v2.check_task(task)
        return longbench_v2.MAX_NEW_TOKENS
    raise ValueError(f"unknown task {task!r} for benchmark {benchmark!r}")


def uses_chat_template(benchmark: str, task: str) -> bool:
    """Whether the task's prompt is wrapped in the model's chat template (official LongBench
    skips it for trec, triviaqa, samsum, lsht, lcc, repobench-p; kvpress applies it to RULER)."""
    if benchmark == "longbench":
        return longbench.task(task).chat_template
    if benchmark == "longbench_v2":
        longbench_v2.check_task(task)
        return longbench_v2.CHAT_TEMPLATE
    max_new_tokens(benchmark, task)  # validates the names
    return True

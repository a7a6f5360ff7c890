"""RULER (arXiv 2404.06654): the one table of its 13 tasks, and where their samples come from.

``source`` picks the samples: ``generate`` (default) builds every task locally at any context
length with no download (one module per RULER task family, each naming where it deviates from
RULER's generator); ``hub`` reads the kvpress authors' pre-generated set and ``local`` a copy of
it or of RULER's own output (``sources.py``). Scoring lives in ``spark_bench.metrics.ruler``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spark_bench.data.ruler import common_words, freq_words, niah, qa, sources, variable_tracking
from spark_bench.data.ruler.fitting import CountTokens
from spark_bench.data.ruler.niah import NIAH_TASKS
from spark_bench.data.sample import Sample

__all__ = ["NIAH_TASKS", "SOURCES", "TASKS", "generate", "load", "tokens_to_generate"]

TOKENS_TO_GENERATE = niah.TOKENS_TO_GENERATE  # the niah family's; see tokens_to_generate()
SOURCES = ("generate", "hub", "local")


@dataclass(frozen=True)
class RulerTask:
    family: str  # RULER's task family (constants.py): niah, variable_tracking, ...
    tokens_to_generate: int  # RULER constants.py


_FAMILIES = {
    "niah": niah.TOKENS_TO_GENERATE,
    "variable_tracking": variable_tracking.TOKENS_TO_GENERATE,
    "common_words_extraction": common_words.TOKENS_TO_GENERATE,
    "freq_words_extraction": freq_words.TOKENS_TO_GENERATE,
    "qa": qa.TOKENS_TO_GENERATE,
}
# RULER scripts/synthetic.yaml: the 13 tasks and their families.
TABLE: dict[str, RulerTask] = {
    **{name: RulerTask("niah", _FAMILIES["niah"]) for name in NIAH_TASKS},
    "vt": RulerTask("variable_tracking", _FAMILIES["variable_tracking"]),
    "cwe": RulerTask("common_words_extraction", _FAMILIES["common_words_extraction"]),
    "fwe": RulerTask("freq_words_extraction", _FAMILIES["freq_words_extraction"]),
    "qa_1": RulerTask("qa", _FAMILIES["qa"]),
    "qa_2": RulerTask("qa", _FAMILIES["qa"]),
}
TASKS: tuple[str, ...] = tuple(TABLE)


def task(name: str) -> RulerTask:
    if name not in TABLE:
        raise ValueError(f"RULER task {name!r} is not one of {list(TASKS)}")
    return TABLE[name]


def tokens_to_generate(name: str) -> int:
    return task(name).tokens_to_generate


def generate(
    name: str,
    num_samples: int,
    context_length: int,
    count_tokens: CountTokens,
    seed: int,
    qa_dir: str | None = None,
) -> list[Sample]:
    """``num_samples`` seeded samples of one task whose prompt plus the task's generated tokens fit
    ``context_length`` tokens of ``count_tokens``' tokenizer. The first k do not depend on
    ``num_samples``."""
    family = task(name).family
    if family == "niah":
        return niah.generate(name, num_samples, context_length, count_tokens, seed)
    if family == "qa":
        return qa.generate(name, num_samples, context_length, count_tokens, seed, qa_dir)
    module = {
        "variable_tracking": variable_tracking,
        "common_words_extraction": common_words,
        "freq_words_extraction": freq_words,
    }[family]
    return module.generate(name, num_samples, context_length, count_tokens, seed)


def load(
    dataset: Mapping[str, Any], count_tokens: CountTokens, seed: int, max_samples: int | None
) -> list[Sample]:
    """The samples of ``dataset.tasks`` from ``dataset.source``, at most ``max_samples`` per task."""
    source, tasks = dataset.get("source", "generate"), list(dataset["tasks"])
    if source == "generate":
        per_task = dataset["num_samples"] if max_samples is None else min(max_samples, dataset["num_samples"])
        return [
            sample
            for name in tasks
            for sample in generate(
                name, per_task, dataset["context_length"], count_tokens, seed, dataset.get("qa_dir")
            )
        ]
    if source == "hub":
        rows = sources.from_hub(dataset["context_length"])
    elif source == "local":
        rows = sources.from_local(dataset["data_dir"], dataset["context_length"], tasks)
    else:
        raise ValueError(f"dataset.source={source!r} is not one of {list(SOURCES)}")
    return [
        s for name in tasks for s in sources.to_samples(rows, name, max_samples, tokens_to_generate(name))
    ]

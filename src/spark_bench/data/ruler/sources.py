"""RULER sets generated elsewhere: the kvpress authors' pre-generated hub set and local copies.

- ``hub``: ``simonjegou/ruler`` (the set the SparK paper's kvpress pipeline reads), one config per
  context length ("4096", ...), split ``test``, columns ``context, question, answer_prefix, answer,
  task, max_new_tokens``: RULER's prompts split where the question begins, generated with the
  Llama-3.1-8B tokenizer.
- ``local``: under ``<data_dir>/<context_length>/``, either that set's files (``*.parquet`` or
  ``*.jsonl`` with the columns above, e.g. a ``huggingface-cli download`` of it) or RULER's own
  ``prepare.py`` output, ``<task>/validation.jsonl`` with ``input, outputs, answer_prefix``,
  split into context and question by the same rule the kvpress authors used: the last
  occurrence of the task's question opening.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spark_bench.data import hub
from spark_bench.data.sample import Sample

HUB_ID = "simonjegou/ruler"
HUB_COLUMNS = ("context", "question", "answer_prefix", "answer", "task")
NATIVE_FILE = "validation.jsonl"  # RULER prepare.py: <save_dir>/<task>/<subset>.jsonl
# Where the question begins in a RULER prompt, per task family (the kvpress authors' rule).
QUESTION_OPENINGS = {
    "niah": re.compile(r"What (?:is|are all) the special magic"),
    "vt": re.compile(r"Question: Find all variables that are assigned the value"),
    "cwe": re.compile(r"Question: What are the 10 most common words in the above list\?"),
    "fwe": re.compile(r"Question: Do not provide any explanation\."),
    "qa": re.compile(r"Answer the question based on the given documents\."),
}


def family(task: str) -> str:
    return task.split("_")[0]


def from_hub(context_length: int) -> list[dict[str, Any]]:
    hint = hub.fetch_hint(HUB_ID, "dataset.source=local dataset.data_dir=<dir>")
    what = f"RULER at dataset.context_length={context_length}"
    return hub.load_records(
        HUB_ID, what, f"dataset.source=hub ({HUB_ID})", hint, str(context_length), split="test"
    )


def from_local(data_dir: str, context_length: int, tasks: Iterable[str]) -> list[dict[str, Any]]:
    """Rows in the hub set's columns from a local copy (either layout, see the module doc)."""
    root = Path(data_dir) / str(context_length)
    if not root.is_dir():
        raise FileNotFoundError(
            f"RULER: {root} does not exist: dataset.data_dir must hold a folder per context length "
            f"(here dataset.context_length={context_length})"
        )
    rows: list[dict[str, Any]] = []
    native = [t for t in tasks if (root / t / NATIVE_FILE).is_file()]
    for task in native:
        rows += [_split_native(task, record) for record in _jsonl(root / task / NATIVE_FILE)]
    if len(native) < len(list(tasks)):
        rows += _table_rows(root)
    return rows


def to_samples(
    rows: Iterable[Mapping[str, Any]], task: str, limit: int | None, max_new_tokens: int
) -> list[Sample]:
    """The rows of ``task``, at most ``limit``; ``max_new_tokens`` where a row has none."""
    samples: list[Sample] = []
    for row in rows:
        if row["task"] != task:
            continue
        if limit is not None and len(samples) >= limit:
            break
        answers = row["answer"]
        answers = [answers] if isinstance(answers, str) else answers
        samples.append(
            Sample(
                id=f"{task}/{len(samples)}",
                task=task,
                context=row["context"],
                question=row["question"],
                answer_prefix=row["answer_prefix"],
                answers=tuple(str(a) for a in answers),
                max_new_tokens=int(row.get("max_new_tokens") or max_new_tokens),
            )
        )
    return samples


def _split_native(task: str, record: Mapping[str, Any]) -> dict[str, Any]:
    text, prefix = record["input"], record.get("answer_prefix", "")
    opening = QUESTION_OPENINGS[family(task)]
    matches = list(opening.finditer(text))
    if not matches:
        raise ValueError(f"RULER {task}: a record's input has no question opening {opening.pattern!r}")
    cut = matches[-1].start()
    return {
        "context": text[:cut],
        "question": text[cut:],
        "answer_prefix": prefix,
        "answer": record["outputs"],
        "task": task,
        "max_new_tokens": record.get("max_new_tokens"),
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number} is not a JSON object: {err}") from None
    return rows


def _table_rows(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(root.glob("*.parquet")):
        import pandas as pd

        rows += pd.read_parquet(path).to_dict("records")
    for path in sorted(root.glob("*.jsonl")):
        rows += _jsonl(path)
    for row in rows:
        missing = [c for c in HUB_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"RULER files under {root} lack the column(s) {missing} of {HUB_ID}")
    return rows

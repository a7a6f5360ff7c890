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

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spark_bench.data import files, hub
from spark_bench.data.sample import Sample

HUB_ID = "simonjegou/ruler"
HUB_COLUMNS = ("context", "question", "answer_prefix", "answer", "task")
# The hub set's columns with their types (its answers are a list, numpy's in a parquet file).
HUB_TYPES = {**dict.fromkeys(HUB_COLUMNS, str), "answer": object}
NATIVE_FIELDS = {"input": str, "outputs": list}  # RULER prepare.py's record: the prompt, the answers
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
        rows += _native_rows(task, root / task / NATIVE_FILE)
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


def _native_rows(task: str, path: Path) -> list[dict[str, Any]]:
    """The records of RULER's own ``prepare.py`` output, in the hub set's columns."""
    rows = []
    for number, record in files.read_jsonl(path):
        where = f"{path}:{number}"
        files.check_fields(where, record, NATIVE_FIELDS, kind="RULER")
        rows.append(_split_native(task, record, where))
    return rows


def _split_native(task: str, record: Mapping[str, Any], where: str) -> dict[str, Any]:
    text, prefix = record["input"], record.get("answer_prefix", "")
    opening = QUESTION_OPENINGS[family(task)]
    matches = list(opening.finditer(text))
    if not matches:
        raise files.DataFileError(
            f"{where}: its input has no question of RULER {task} (no {opening.pattern!r}): "
            f"{task}/{NATIVE_FILE} must be RULER's prepare.py output for {task}"
        )
    cut = matches[-1].start()
    return {
        "context": text[:cut],
        "question": text[cut:],
        "answer_prefix": prefix,
        "answer": record["outputs"],
        "task": task,
        "max_new_tokens": record.get("max_new_tokens"),
    }


def _table_rows(root: Path) -> list[dict[str, Any]]:
    """The rows of the hub set's files under ``root`` (parquet, then jsonl)."""
    paths = sorted(root.glob("*.parquet")) + sorted(root.glob("*.jsonl"))
    located = [located for path in paths for located in _located_rows(path)]
    for where, row in located:
        files.check_fields(where, row, HUB_TYPES, kind=HUB_ID, fix="fix or delete that row")
    return [row for _, row in located]


def _located_rows(path: Path) -> list[tuple[str, Any]]:
    """The rows of one file, each with where it is (``file:line``, ``file: row n``)."""
    if path.suffix == ".parquet":
        return [(f"{path}: row {n}", row) for n, row in enumerate(files.read_parquet(path), 1)]
    return [(f"{path}:{n}", row) for n, row in files.read_jsonl(path)]

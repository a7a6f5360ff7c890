"""LongBench-v2 (arXiv 2412.15204): 503 four-choice questions over long contexts, 0-shot.

The prompt is ``prompts/0shot.txt`` of THUDM/LongBench (commit 2e00731), filled as the official
``pred.py`` fills it: chained ``str.replace`` of ``$DOC$``, ``$Q$``, ``$C_A$``..``$C_D$`` with the
stripped fields; 128 new tokens; the chat template applied (``pred.py`` sends one user message).
Deviation: ``pred.py`` samples at temperature 0.1; spark_bench decodes greedily, as for every
benchmark, so that runs are deterministic. Tasks are the six official domains; scores follow
``result.py`` (see ``spark_bench.metrics.longbench_v2``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spark_bench.data import files, hub
from spark_bench.data.sample import Sample

# prompts/0shot.txt, verbatim (no trailing newline).
PROMPT = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n(C) $C_C$\n"
    '(D) $C_D$\n\nFormat your response as follows: "The correct answer is (insert answer here)".'
)
QUESTION_START = PROMPT.index("What is the correct answer")
MAX_NEW_TOKENS = 128  # pred.py, the non-CoT setting
CHAT_TEMPLATE = True
HUB_ID, HUB_SPLIT = "THUDM/LongBench-v2", "train"
# The official release is one JSON list (data.json); jsonl and parquet copies are read too.
DATA_FILES = ("data.json", "data.jsonl", "data.parquet")
RECORD_FIELDS = (
    "_id",
    "domain",
    "difficulty",
    "length",
    "question",
    "choice_A",
    "choice_B",
    "choice_C",
    "choice_D",
    "answer",
    "context",
)
RECORD_TYPES = dict.fromkeys(RECORD_FIELDS, str)  # every field the prompt and the score read is text
# Task name -> the record's "domain" (the six categories of the paper, 175/125/81/39/50/33 questions).
DOMAINS = {
    "single_document_qa": "Single-Document QA",
    "multi_document_qa": "Multi-Document QA",
    "long_in_context_learning": "Long In-context Learning",
    "long_dialogue_history": "Long-dialogue History Understanding",
    "code_repository": "Code Repository Understanding",
    "long_structured_data": "Long Structured Data Understanding",
}
TASKS: tuple[str, ...] = tuple(DOMAINS)
DIFFICULTIES, LENGTHS = ("easy", "hard"), ("short", "medium", "long")


def check_task(name: str) -> None:
    if name not in DOMAINS:
        raise ValueError(f"LongBench-v2 task {name!r} is not one of {list(TASKS)}")


def build_prompt(record: Mapping[str, Any]) -> str:
    """pred.py: the 0-shot template with the record's fields, replaced in its order."""
    return _fill_question(PROMPT.replace("$DOC$", record["context"].strip()), record)


# pred.py's replacements after $DOC$, in its order.
_QUESTION_MARKERS = (
    ("$Q$", "question"),
    ("$C_A$", "choice_A"),
    ("$C_B$", "choice_B"),
    ("$C_C$", "choice_C"),
    ("$C_D$", "choice_D"),
)


def _fill_question(text: str, record: Mapping[str, Any]) -> str:
    for marker, field in _QUESTION_MARKERS:
        text = text.replace(marker, record[field].strip())
    return text


def split_prompt(record: Mapping[str, Any]) -> tuple[str, str]:
    """(text up to the question, the rest); joined they are ``build_prompt``."""
    prompt = build_prompt(record)
    tail = _fill_question(PROMPT[QUESTION_START:], record)
    if not prompt.endswith(tail):  # a document holding a marker changes the chained replace
        tail = prompt[prompt.rindex(PROMPT[QUESTION_START : QUESTION_START + 30]) :]
    return prompt[: len(prompt) - len(tail)], tail


def find_data_file(data_dir: str) -> Path | None:
    for name in DATA_FILES:
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    return None


def load_records(data_dir: str | None) -> list[dict[str, Any]]:
    """All 503 records: the hub release through ``datasets``, or ``<data_dir>/data.json``."""
    if data_dir is None:
        hint = hub.fetch_hint(HUB_ID, "dataset.data_dir=<dir>")
        return hub.load_records(HUB_ID, "LongBench-v2", f"the hub ({HUB_ID})", hint, split=HUB_SPLIT)
    path = find_data_file(data_dir)
    if path is None:
        raise FileNotFoundError(f"LongBench-v2: dataset.data_dir={data_dir} holds none of {list(DATA_FILES)}")
    records = []
    for where, record in _located_records(path):
        files.check_fields(where, record, RECORD_TYPES, fix="fix or delete that record")
        records.append(record)
    return records


def _located_records(path: Path) -> list[tuple[str, Any]]:
    """The records of a data file, each with where it is (``file:line``, ``file: record n``)."""
    if path.suffix == ".parquet":
        return [(f"{path}: row {n}", r) for n, r in enumerate(files.read_parquet(path), 1)]
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", r) for n, r in files.read_jsonl(path)]
    data = files.read_json(path)
    if not isinstance(data, list):
        raise files.DataFileError(
            f"{path} holds {files.type_name(data)}, where the official data.json holds a list of records: "
            "replace it with the official release"
        )
    return [(f"{path}: record {n}", r) for n, r in enumerate(data, 1)]


def to_samples(task: str, records: list[Mapping[str, Any]], limit: int | None) -> list[Sample]:
    """The records of ``task``'s domain, at most ``limit``, in file order."""
    check_task(task)
    chosen = [r for r in records if r["domain"] == DOMAINS[task]][:limit]
    samples = []
    for record in chosen:
        head, tail = split_prompt(record)
        samples.append(
            Sample(
                id=f"{task}/{record['_id']}",
                task=task,
                context=head,
                question=tail,
                answer_prefix="",
                answers=(record["answer"],),
                max_new_tokens=MAX_NEW_TOKENS,
                chat_template=CHAT_TEMPLATE,
                labels=(record["difficulty"], record["length"]),
            )
        )
    return samples

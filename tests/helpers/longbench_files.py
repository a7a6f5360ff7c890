"""Local data files in the official LongBench and LongBench-v2 formats."""

from __future__ import annotations

import json

from spark_bench.data import longbench_v2

TREC_CLASSES = ["Description", "Entity", "Abbreviation", "Human being", "Location", "Numeric value"]


def write_longbench(directory, task: str, n: int, words: int = 300) -> None:
    """Records shaped like the official LongBench jsonl (fields of THUDM/LongBench data.zip)."""
    lines = []
    for i in range(n):
        lines.append(
            json.dumps(
                {
                    "input": f"Question number {i}?",
                    "context": " ".join(f"word{j}" for j in range(words)),
                    "answers": ["Description"] if task == "trec" else [f"answer {i}"],
                    "length": words,
                    "dataset": task,
                    "language": "en",
                    "all_classes": TREC_CLASSES if task == "trec" else None,
                    "_id": f"id{i}",
                }
            )
        )
    (directory / f"{task}.jsonl").write_text("\n".join(lines) + "\n")


V2_RECORD = {
    "_id": "66f36490821e116aacb2cc22",
    "domain": "Single-Document QA",
    "sub_domain": "Financial",
    "difficulty": "easy",
    "length": "short",
    "question": " Which company grew fastest? ",
    "choice_A": "Acme",
    "choice_B": " Globex ",
    "choice_C": "Initech",
    "choice_D": "Umbrella",
    "answer": "B",
    "context": "\n  The annual report says Globex grew 40%.  \n",
}


def write_longbench_v2(directory, per_domain: int = 2) -> None:
    """A data.json shaped like the official LongBench-v2 release (one JSON list)."""
    records = []
    for d, domain in enumerate(longbench_v2.DOMAINS.values()):
        for i in range(per_domain):
            records.append(
                {
                    **V2_RECORD,
                    "_id": f"id{d}-{i}",
                    "domain": domain,
                    "difficulty": ("easy", "hard")[i % 2],
                    "length": ("short", "medium", "long")[i % 3],
                    "context": " ".join(f"word{j}" for j in range(200)),
                }
            )
    (directory / "data.json").write_text(json.dumps(records))

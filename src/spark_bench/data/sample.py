"""One benchmark sample, in the split the runner needs: what may be compressed and what follows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """A question about a context.

    ``context`` + ``question`` + ``answer_prefix`` is the prompt the benchmark's official code
    builds (before any chat template). Samples that share ``context`` can be answered from one
    prefill when the question is not compressed with it.
    """

    id: str
    task: str
    context: str
    question: str
    answer_prefix: str
    answers: tuple[str, ...]
    max_new_tokens: int
    chat_template: bool = True
    all_classes: tuple[str, ...] | None = None  # classification tasks (LongBench trec, lsht)
    # The official score breakdowns the sample counts in (LongBench-E length bucket,
    # LongBench-v2 difficulty and length): its benchmark's ``breakdown_groups``.
    labels: tuple[str, ...] = ()

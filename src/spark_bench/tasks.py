"""``python -m spark_bench.tasks [benchmark]``: the tasks a benchmark offers, for ``dataset.tasks``.

For each task: its official generation length, whether its prompt goes through the model's
chat template, and its metric, as the run uses them.
"""

from __future__ import annotations

import argparse
import sys

from spark_bench import data
from spark_bench.data import longbench, longbench_v2, ruler
from spark_bench.metrics import ruler as ruler_metrics

LONGBENCH_V2_METRIC = "accuracy"  # of the extracted choice letter (LongBench-v2 result.py)


def _metric(benchmark: str, task: str) -> str:
    if benchmark == "longbench":
        return longbench.task(task).metric
    if benchmark == "longbench_v2":
        return LONGBENCH_V2_METRIC
    return "string_match_part" if task.startswith(ruler_metrics.PART_MATCH_PREFIXES) else "string_match_all"


def task_names(benchmark: str) -> tuple[str, ...]:
    names = {"longbench": tuple(longbench.TASKS), "longbench_v2": longbench_v2.TASKS, "ruler": ruler.TASKS}
    if benchmark not in names:
        raise ValueError(f"unknown benchmark {benchmark!r}; available: {list(data.BENCHMARKS)}")
    return names[benchmark]


def table(benchmark: str) -> str:
    rows = [("task", "max_new_tokens", "chat template", "metric")]
    rows += [
        (
            task,
            str(data.max_new_tokens(benchmark, task)),
            "yes" if data.uses_chat_template(benchmark, task) else "no",
            _metric(benchmark, task),
        )
        for task in task_names(benchmark)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return f"{benchmark} (dataset={benchmark}, pick with 'dataset.tasks=[...]'):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spark_bench.tasks",
        description="List the tasks of a benchmark (all benchmarks by default).",
    )
    parser.add_argument("benchmark", nargs="?", help=f"one of {', '.join(data.BENCHMARKS)}")
    args = parser.parse_args(argv)
    if args.benchmark is not None and args.benchmark not in data.BENCHMARKS:
        available = ", ".join(data.BENCHMARKS)
        print(
            f"spark_bench: error: unknown benchmark {args.benchmark!r}; available: {available}",
            file=sys.stderr,
        )
        return 2
    print("\n\n".join(table(b) for b in ([args.benchmark] if args.benchmark else data.BENCHMARKS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

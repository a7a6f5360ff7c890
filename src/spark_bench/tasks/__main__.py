"""``python -m spark_bench.tasks [benchmark]``: the tasks a benchmark offers, for ``dataset.tasks``.

For each task: its official generation length, whether its prompt goes through the model's
chat template, and its metric, as the run uses them.
"""

from __future__ import annotations

import argparse
import sys

from spark_bench import tasks


def table(name: str) -> str:
    benchmark = tasks.get(name)
    rows = [("task", "max_new_tokens", "chat template", "metric")]
    rows += [
        (
            task,
            str(benchmark.max_new_tokens(task)),
            "yes" if benchmark.uses_chat_template(task) else "no",
            benchmark.metric(task),
        )
        for task in benchmark.tasks
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return f"{name} (dataset={name}, pick with 'dataset.tasks=[...]'):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spark_bench.tasks",
        description="List the tasks of a benchmark (all benchmarks by default).",
    )
    parser.add_argument("benchmark", nargs="?", help=f"one of {', '.join(tasks.names())}")
    args = parser.parse_args(argv)
    if args.benchmark is not None and args.benchmark not in tasks.BENCHMARKS:
        available = ", ".join(tasks.names())
        print(
            f"spark_bench: error: unknown benchmark {args.benchmark!r}; available: {available}",
            file=sys.stderr,
        )
        return 2
    print("\n\n".join(table(b) for b in ([args.benchmark] if args.benchmark else tasks.names())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

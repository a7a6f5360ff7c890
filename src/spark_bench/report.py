"""Tables from a results tree: ``python -m spark_bench.report <results_root>``.

Prints one markdown table per model, dataset and token budget, in the paper's layout: rows
are presses with their key ratio, columns the tasks and their average.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from spark_bench.results import load_results


def budget_label(row: pd.Series) -> str:
    if pd.notna(row["kv_budget"]):
        return f"kv_budget={int(row['kv_budget'])}"
    if pd.notna(row["compression_ratio"]):
        return f"compression_ratio={row['compression_ratio']:g}"
    return "full cache"


def press_label(row: pd.Series) -> str:
    return row["press"] if pd.isna(row["key_ratio"]) else f"{row['press']} (λ={row['key_ratio']:g})"


def markdown_tables(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no results.json found\n"
    frame = frame.assign(budget=frame.apply(budget_label, axis=1), row=frame.apply(press_label, axis=1))
    blocks = []
    for (model, dataset, budget), block in frame.groupby(["model", "dataset", "budget"], sort=True):
        table = block.pivot_table(index="row", columns="task", values="score", aggfunc="first")
        tasks = [c for c in table.columns if c != "average"] + ["average"]
        ratio = block.groupby("row")[["kv_cache_bytes", "kv_cache_dense_bytes"]].first()
        table = table[tasks].assign(kv=(ratio["kv_cache_bytes"] / ratio["kv_cache_dense_bytes"]).round(2))
        lines = [
            f"### {model} · {dataset} · {budget}",
            "",
            "| press | " + " | ".join([*tasks, "KV / dense"]) + " |",
        ]
        lines.append("|---" * (len(tasks) + 2) + "|")
        for name, values in table.sort_values("average", ascending=False).iterrows():
            cells = [f"{v:.2f}" for v in values[tasks]] + [f"{values['kv']:.2f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_root", type=Path)
    args = parser.parse_args(argv)
    if not args.results_root.is_dir():
        parser.error(f"results_root {args.results_root} is not a directory")
    sys.stdout.write(markdown_tables(load_results(args.results_root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""From a results tree to the paper's tables and plots: ``python -m spark_bench.report <root>``.

Writes into ``--out`` (default ``<root>/report``):

- ``report.md``: one markdown table per model, dataset and token budget, in the paper's layout
  (rows: presses with their key ratio; columns: tasks, average, KV bytes held / dense); also
  printed on stdout;
- ``results.csv``: the tidy frame of ``load_results`` (one row per run and task);
- ``score_vs_key_ratio_<model>_<dataset>.png``: average score against λ, one line per press and
  budget (presses without key pruning drawn as a flat reference line);
- ``score_vs_kv_bytes_<model>_<dataset>.png``: average score against the KV bytes the cache
  really holds, every run a point, the Pareto front drawn.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from spark_bench.paper import attach_paper_scores
from spark_bench.results import budget_label, load_results, paper_table

REPORT_DIR = "report"
MARKDOWN_FILE, CSV_FILE = "report.md", "results.csv"


PAPER_NOTE = (
    "In parentheses: the SparK paper's published score for the same config "
    "(spark_bench/paper_results.csv; see docs/reproducing.md)."
)


def markdown_tables(frame: pd.DataFrame) -> str:
    """The paper-layout tables, best average first within each block; where the paper published
    a score for a cell's config, it follows the measured one in parentheses."""
    if frame.empty:
        return "no results.json found\n"
    table = paper_table(frame)
    published = paper_table(attach_paper_scores(frame), values="paper_score").reindex_like(table)
    tasks = [c for c in table.columns if c != "kv_ratio"]
    blocks = []
    for (model, dataset, budget), block in table.groupby(level=["model", "dataset", "budget"], sort=True):
        block = block.droplevel(["model", "dataset", "budget"]).dropna(axis=1, how="all")
        paper = published.loc[(model, dataset, budget)]
        shown = [t for t in tasks if t in block.columns]
        lines = [
            f"### {model} · {dataset} · {budget}",
            "",
            "| press | " + " | ".join([*shown, "KV / dense"]) + " |",
        ]
        lines.append("|---" * (len(shown) + 2) + "|")
        order = block.sort_values("average", ascending=False) if "average" in block.columns else block
        for name, values in order.iterrows():
            cells = [_cell(values[t], paper.at[name, t] if t in paper.columns else None) for t in shown]
            lines.append(f"| {name} | " + " | ".join([*cells, _cell(values["kv_ratio"])]) + " |")
        if paper.drop(columns="kv_ratio").notna().any().any():
            lines += ["", PAPER_NOTE]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _cell(value: float, paper: float | None = None) -> str:
    measured = "–" if pd.isna(value) else f"{value:.2f}"
    return measured if paper is None or pd.isna(paper) else f"{measured} ({paper:.2f})"


def plot_key_ratio_curves(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Average score against key ratio λ, one line per press and budget."""
    import matplotlib.pyplot as plt

    averages = frame[frame["task"] == "average"].assign(budget=lambda f: f.apply(budget_label, axis=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    pruned = averages[averages["key_ratio"].notna()]
    for (press, budget), group in pruned.groupby(["press", "budget"], sort=True):
        group = group.sort_values("key_ratio")
        ax.plot(group["key_ratio"], group["score"], marker="o", label=f"{press} · {budget}")
    for (press, budget), group in averages[averages["key_ratio"].isna()].groupby(
        ["press", "budget"], sort=True
    ):
        ax.axhline(
            group["score"].iloc[0], linestyle="--", linewidth=1, label=f"{press} · {budget}", color="grey"
        )
    ax.set(xlabel="key ratio λ (fraction of key channels pruned)", ylabel="average score", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The runs no other run beats on both axes: fewer KV bytes and a higher score."""
    ordered = points.sort_values(["kv_cache_bytes", "score"], ascending=[True, False])
    front, best = [], float("-inf")
    for index, row in ordered.iterrows():
        if row["score"] > best:
            front.append(index)
            best = row["score"]
    return ordered.loc[front]


def plot_memory_pareto(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Average score against the KV bytes held, every run a point, the Pareto front drawn."""
    import matplotlib.pyplot as plt

    averages = frame[frame["task"] == "average"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for press, group in averages.groupby("press", sort=True):
        ax.scatter(group["kv_cache_bytes"] / 2**20, group["score"], label=press, s=24)
    front = pareto_front(averages)
    ax.plot(front["kv_cache_bytes"] / 2**20, front["score"], color="black", linewidth=1, label="Pareto front")
    ax.set(xlabel="KV cache held (MiB, mean per prefill)", ylabel="average score", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", part) for part in parts)


def write_report(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Write the markdown, the CSV and the plots into ``out``; return the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters
    out.mkdir(parents=True, exist_ok=True)
    written = [out / MARKDOWN_FILE, out / CSV_FILE]
    written[0].write_text(markdown_tables(frame))
    frame.to_csv(written[1], index=False)
    groups = list(frame.groupby(["model", "dataset"], sort=True)) if not frame.empty else []
    for (model, dataset), group in tqdm(groups, desc="plots", unit="plot", disable=not sys.stderr.isatty()):
        title = f"{model} · {dataset}"
        curves = out / f"score_vs_key_ratio_{_slug(model, dataset)}.png"
        pareto = out / f"score_vs_kv_bytes_{_slug(model, dataset)}.png"
        plot_key_ratio_curves(group, curves, title)
        plot_memory_pareto(group, pareto, title)
        written += [curves, pareto]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_root", type=Path)
    parser.add_argument("--out", type=Path, default=None, help=f"default: <results_root>/{REPORT_DIR}")
    args = parser.parse_args(argv)
    if not args.results_root.is_dir():
        parser.error(f"results_root {args.results_root} is not a directory")
    frame = load_results(args.results_root)
    written = write_report(frame, args.out or args.results_root / REPORT_DIR)
    sys.stdout.write(markdown_tables(frame))
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

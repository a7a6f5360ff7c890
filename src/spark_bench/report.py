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

from spark_bench import provenance
from spark_bench.labels import label_runs
from spark_bench.paper import attach_paper_scores
from spark_bench.results import atomic_output, load_results, paper_table

REPORT_DIR = "report"
MARKDOWN_FILE, CSV_FILE = "report.md", "results.csv"
BLOCK_LEVELS = ["model", "dataset", "budget", "setting"]  # one table each
# Provenance columns of load_results whose mixing within one table is worth a warning.
VERSION_COLUMNS = {
    "code_version": "code versions",
    "torch_version": "torch versions",
    "transformers_version": "transformers versions",
    "kvpress_version": "kvpress versions",
}
MIXED_HINT = {
    True: "Rows may differ by code, not by press: `rerun=stale` runs the older points again.",
    False: "Rows may differ by library, not by press.",
}
SUPERSEDED_NOTE = "Older results of a config shown above (its newest is shown), not used:"
SKIPPED_NOTE = "Skipped, not a complete results.json (half-written, damaged or another schema):"


PAPER_NOTE = (
    "In parentheses: the SparK paper's published score for the same config "
    "(spark_bench/paper_results.csv; see docs/reproducing.md)."
)


def markdown_tables(frame: pd.DataFrame) -> str:
    """The paper-layout tables, best average first within each block; where the paper published
    a score for a cell's config, it follows the measured one in parentheses. A block whose runs
    were made by different code or library versions says so under its table; results left out
    (superseded by a newer one of their config, or unreadable) are listed at the end."""
    if frame.empty:
        return "no results.json found\n" + _left_out(frame)
    labelled = label_runs(frame)
    table = paper_table(frame)
    published = paper_table(attach_paper_scores(frame), values="paper_score").reindex_like(table)
    tasks = [c for c in table.columns if c != "kv_ratio"]
    blocks = []
    for key, block in table.groupby(level=BLOCK_LEVELS, sort=True):
        block = block.droplevel(BLOCK_LEVELS).dropna(axis=1, how="all")
        paper = published.loc[key]
        shown = [t for t in tasks if t in block.columns]
        lines = [
            f"### {' · '.join(part for part in key if part)}",
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
        runs = labelled[(labelled[BLOCK_LEVELS] == pd.Series(key, index=BLOCK_LEVELS)).all(axis=1)]
        lines += [f"\n{note}" for note in mixed_versions(runs)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" + _left_out(frame)


def mixed_versions(runs: pd.DataFrame) -> list[str]:
    """One warning per provenance column (code version, library versions) that differs among
    ``runs``, with how many runs each value has; none when they agree."""
    notes = []
    per_run = runs.drop_duplicates("path")
    for column, what in VERSION_COLUMNS.items():
        if column not in per_run.columns:
            continue
        counts = per_run[column].fillna(provenance.UNRECORDED).value_counts(sort=False).sort_index()
        if len(counts) > 1:
            found = ", ".join(f"{value} ({count} run{'s' * (count > 1)})" for value, count in counts.items())
            notes.append(f"**Mixed {what}:** {found}. {MIXED_HINT[column == 'code_version']}")
    return notes


def _left_out(frame: pd.DataFrame) -> str:
    """The results.json files the tables leave out, and why."""
    lines = []
    for reason, paths in (
        (SUPERSEDED_NOTE, frame.attrs.get("superseded", [])),
        (SKIPPED_NOTE, frame.attrs.get("skipped", [])),
    ):
        if paths:
            lines += ["", reason, *(f"- `{path}`" for path in paths)]
    return "\n".join(lines) + ("\n" if lines else "")


def _cell(value: float, paper: float | None = None) -> str:
    measured = "–" if pd.isna(value) else f"{value:.2f}"
    return measured if paper is None or pd.isna(paper) else f"{measured} ({paper:.2f})"


def plot_key_ratio_curves(frame: pd.DataFrame, path: Path, title: str) -> None:
    """Average score against key ratio λ, one line per press (with any press knob that
    separates runs), budget and setting (``labels.label_runs``)."""
    import matplotlib.pyplot as plt

    averages = _labelled(frame[frame["task"] == "average"])
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = ["series", "budget", "setting"]
    pruned = averages[averages["key_ratio"].notna()]
    for key, group in pruned.groupby(lines, sort=True):
        group = group.sort_values("key_ratio")
        ax.plot(group["key_ratio"], group["score"], marker="o", label=_legend(key))
    for key, group in averages[averages["key_ratio"].isna()].groupby(lines, sort=True):
        ax.axhline(group["score"].iloc[0], linestyle="--", linewidth=1, label=_legend(key), color="grey")
    ax.set(xlabel="key ratio λ (fraction of key channels pruned)", ylabel="average score", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a plot with nothing to name has no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "series" in frame.columns else label_runs(frame)


def _legend(key: tuple[str, ...]) -> str:
    return " · ".join(part for part in key if part)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
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
    """Average score against the KV bytes held, every run a point, the Pareto front of each
    setting (``labels.label_runs``) drawn: runs of different settings do not compete."""
    import matplotlib.pyplot as plt

    averages = _labelled(frame[frame["task"] == "average"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for press, group in averages.groupby("press", sort=True):
        ax.scatter(group["kv_cache_bytes"] / 2**20, group["score"], label=press, s=24)
    for setting, group in averages.groupby("setting", sort=True):
        front = pareto_front(group)
        label = f"Pareto front · {setting}" if setting else "Pareto front"
        ax.plot(front["kv_cache_bytes"] / 2**20, front["score"], color="black", linewidth=1, label=label)
    ax.set(xlabel="KV cache held (MiB, mean per prefill)", ylabel="average score", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a plot with nothing to name has no legend
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", part) for part in parts if part)


def write_report(frame: pd.DataFrame, out: Path) -> list[Path]:
    """Write the markdown, the CSV and the plots (one pair per model, dataset and setting) into
    ``out``, each file atomically; return the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters
    written = [out / MARKDOWN_FILE, out / CSV_FILE]
    with atomic_output(written[0]) as tmp:
        tmp.write_text(markdown_tables(frame))
    with atomic_output(written[1]) as tmp:
        frame.to_csv(tmp, index=False)
    labelled = label_runs(frame)
    keys = ["model", "dataset", "setting"]
    groups = list(labelled.groupby(keys, sort=True)) if not frame.empty else []
    for key, group in tqdm(groups, desc="plots", unit="plot", disable=not sys.stderr.isatty()):
        title = _legend(key)
        curves = out / f"score_vs_key_ratio_{_slug(*key)}.png"
        pareto = out / f"score_vs_kv_bytes_{_slug(*key)}.png"
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

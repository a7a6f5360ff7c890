"""How runs are told apart in tables and plots: no two different configs under one label.

The paper's layout names a run by model, dataset, token budget and press with its key ratio.
Runs can differ in anything else their config holds (RULER context length, recovery, windows,
seed, ``max_samples``, dtype, a press parameter...). ``label_runs`` finds, among the runs being
shown, every config field that tells some of them apart and puts it in their labels:

- ``setting``: the fields of the run as a whole (dataset, model, prompt, sampling), which head
  their own table block and plot, e.g. ``context_length=131072``;
- ``row``: the press's own knobs, which extend the row name, e.g. ``snap_spark (λ=0.8,
  recovery=none)``; ``series`` is the same without λ (one line of a λ curve).

A field is shown only where it separates runs that the fields already shown do not, so a field
that follows from another (``dataset.context_length`` from ``context_length``) adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from spark_bench import knobs
from spark_bench.provenance import FRAME_COLUMNS  # what made a run, not what it is

if TYPE_CHECKING:
    import pandas as pd

# The columns the paper's layout already shows (model, dataset, budget, press with λ).
LAYOUT_COLUMNS = ("model", "dataset", "press", *knobs.names(knobs.LAYOUT))
# Press knobs: they extend a row's name (null for a press that does not read them).
ROW_KNOBS = knobs.names(knobs.ROW)
# Run-wide knobs, most telling first; then every other top-level scalar and model.*/dataset.* field.
SETTING_KNOBS = ("context_length", "max_samples", "max_new_tokens", "compress_questions", "seed")
# Prefix of the frame's columns that hold the press config's own fields (press.press.window_size).
PRESS_FIELDS = "press."
# Columns that describe a run's outcome or origin, not its config.
NOT_CONFIG = (
    "n_samples", "config_hash", "finished_at", "task", "score", "path", "kv_cache_bytes",
    "kv_cache_dense_bytes", "peak_gpu_bytes", "peak_rss_bytes", "prefill_s", "decode_s", "total_s",
    "shared_prefill_samples", "compress_s", "paper_score",
)  # fmt: skip
NULL = "null"
LISTED_ITEMS = 4  # a longer list (dataset.tasks) is labelled by its length


def budget_label(row: Mapping[str, Any]) -> str:
    """How many tokens a run keeps, as the paper's tables head their blocks."""
    if present(row["kv_budget"]):
        return f"kv_budget={int(row['kv_budget'])}"
    if present(row["compression_ratio"]):
        return f"compression_ratio={row['compression_ratio']:g}"
    return "full cache"


def press_label(row: Mapping[str, Any]) -> str:
    """A press with its key ratio, as the paper's table rows: ``snap_spark (λ=0.8)``."""
    return row["press"] if not present(row["key_ratio"]) else f"{row['press']} (λ={row['key_ratio']:g})"


def label_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (``results.load_results``) with ``budget``, ``setting``, ``row`` and ``series``
    labels that separate every pair of different configs among its runs."""
    if frame.empty:
        return frame.assign(budget=[], setting=[], row=[], series=[])
    runs = frame.drop_duplicates("path").set_index("path")
    budget = runs.apply(budget_label, axis=1).rename("budget")
    setting = _settings(runs)
    extras = _row_extras(runs.assign(budget=budget, setting=setting))
    row, series = {}, {}
    for path, run in runs.iterrows():
        shown = [*([f"λ={run['key_ratio']:g}"] if present(run["key_ratio"]) else []), *extras[path]]
        row[path] = f"{run['press']} ({', '.join(shown)})" if shown else run["press"]
        series[path] = f"{run['press']} ({', '.join(extras[path])})" if extras[path] else run["press"]
    labels = {"budget": budget, "setting": setting, "row": row, "series": series}
    return frame.assign(**{name: frame["path"].map(values) for name, values in labels.items()})


def _settings(runs: pd.DataFrame) -> dict[str, str]:
    """Per run, the run-wide fields that differ among the runs of its model and dataset."""
    candidates = _ordered(SETTING_KNOBS, [c for c in runs.columns if _is_setting(c)])
    out = {}
    for _, group in runs.groupby(["model", "dataset"], sort=False, dropna=False):
        chosen = _differing(group, candidates, count_null=True)
        for path, run in group.iterrows():
            out[path] = " · ".join(f"{c}={format_value(run[c])}" for c in chosen)
    return out


def _row_extras(runs: pd.DataFrame) -> dict[str, list[str]]:
    """Per run, the press knobs that differ among the runs of its table (where the press reads
    them), and the press config fields that differ among its press's runs there."""
    out: dict[str, list[str]] = {}
    for _, block in runs.groupby(["model", "dataset", "budget", "setting"], sort=False, dropna=False):
        differing = _differing(block, [k for k in ROW_KNOBS if k in block.columns], count_null=False)
        for _, same_press in block.groupby("press", sort=False):
            fields = sorted(c for c in same_press.columns if c.startswith(PRESS_FIELDS))
            more = _differing(same_press, fields, count_null=False)
            for path, run in same_press.iterrows():
                out[path] = [f"{c}={format_value(run[c])}" for c in (*differing, *more) if present(run[c])]
        _disambiguate(block, out)
    return out


def _disambiguate(block: pd.DataFrame, extras: dict[str, list[str]]) -> None:
    """The last guard: two configs that every field above leaves with one label (a field
    outside the frame) get their config hash, never one shared row."""
    seen: dict[tuple[Any, ...], set[str]] = {}
    for path, run in block.iterrows():
        seen.setdefault((run["press"], format_value(run["key_ratio"]), *extras[path]), set()).add(
            run["config_hash"]
        )
    for path, run in block.iterrows():
        if len(seen[(run["press"], format_value(run["key_ratio"]), *extras[path])]) > 1:
            extras[path] = [*extras[path], f"config {run['config_hash']}"]


def _differing(runs: pd.DataFrame, candidates: Iterable[str], count_null: bool) -> list[str]:
    """The candidates, in order, that take more than one value among ``runs`` (null counted as
    a value only with ``count_null``), less those that repeat, run by run, a column already
    shown (``press.key_ratio`` is ``key_ratio``; ``dataset.context_length`` is
    ``context_length``)."""
    chosen: list[str] = []
    shown = [c for c in (*LAYOUT_COLUMNS, *ROW_KNOBS) if c in runs.columns]
    for column in candidates:
        if column not in runs.columns:
            continue
        values = runs[column].map(format_value)
        kinds = set(values) if count_null else set(values) - {NULL}
        if len(kinds) < 2:
            continue
        same = [c for c in (*shown, *chosen) if c != column and runs[c].map(format_value).equals(values)]
        if not same:
            chosen.append(column)
    return chosen


def _is_setting(column: str) -> bool:
    return not (
        column in LAYOUT_COLUMNS
        or column in ROW_KNOBS
        or column in NOT_CONFIG
        or column in FRAME_COLUMNS
        or column.startswith(PRESS_FIELDS)
    )


def _ordered(first: Iterable[str], columns: Iterable[str]) -> list[str]:
    """``first`` (those present), then top-level columns, then dotted ones, each sorted."""
    columns = list(columns)
    head = [c for c in first if c in columns]
    rest = sorted((c for c in columns if c not in head), key=lambda c: ("." in c, c))
    return head + rest


def format_value(value: Any) -> str:
    """A config value as a label shows it: ``null``, ``true``, ``0.8``, ``4096``."""
    if not present(value):
        return NULL
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's, from a frame
        return str(bool(value)).lower()
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    items = text.split(",")
    return f"[{len(items)} items]" if len(items) > LISTED_ITEMS else text


def present(value: Any) -> bool:
    return value is not None and value == value  # NaN != NaN

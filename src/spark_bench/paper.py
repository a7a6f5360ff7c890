"""The SparK paper's published numbers, and the measured cells they correspond to.

``paper_results.csv`` (beside this module) holds one published score per row: the config it was
measured with (model preset, dataset, press, token budget, key ratio λ, the observation windows
the reference code ran with) and the task (``average`` for the paper's average). A measured
cell gets the published value only when its run is that config in the paper's setting, so a
delta is never read off two different experiments.
"""

from __future__ import annotations

import math
from functools import cache
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spark_bench.data import longbench

PAPER_FILE = Path(__file__).with_name("paper_results.csv")
# The knobs a published row names; a run matches where each is equal (null where the press does
# not read the knob, as results record it).
MATCHED = ("model", "dataset", "press", "kv_budget", "key_ratio", "token_window", "channel_window", "task")
# The paper's setting, the same for every published row: mean recovery, values not pruned, the
# question compressed with the context, every sample, the official generation lengths.
SETTING: dict[str, tuple[Any, ...]] = {
    "recovery": ("mean", None),  # null for presses that do not read it
    "value_ratio": (0.0, None),
    "compress_questions": (True,),
    "max_samples": (None,),
    "max_new_tokens": (None,),
}
# The tasks the paper averages over, per dataset: an ``average`` over other tasks is not its average.
AVERAGED_TASKS = {"longbench": frozenset(longbench.HUB_TASKS)}


@cache
def published() -> pd.DataFrame:
    """The rows of ``paper_results.csv`` (empty knob cells read as null)."""
    frame = pd.read_csv(PAPER_FILE, dtype={"kv_budget": "Int64"})
    return frame.astype(object).where(frame.notna(), None)


def attach_paper_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (``load_results``) with ``paper_score``: the published score of each row's
    config and task, NaN where the paper published none or the run is not in its setting."""
    if frame.empty:
        return frame.assign(paper_score=pd.Series(dtype=float))
    tasks_of_run = frame.groupby("path")["task"].agg(lambda tasks: frozenset(tasks) - {"average"})
    lookup = {tuple(_normal(row[k]) for k in MATCHED): row["score"] for _, row in published().iterrows()}
    scores = []
    for _, row in frame.iterrows():
        score = lookup.get(tuple(_normal(row.get(k)) for k in MATCHED))
        in_setting = all(_normal(row.get(knob)) in allowed for knob, allowed in SETTING.items())
        averaged = AVERAGED_TASKS.get(row["dataset"])
        whole_average = row["task"] != "average" or averaged is None or tasks_of_run[row["path"]] == averaged
        scores.append(score if score is not None and in_setting and whole_average else math.nan)
    return frame.assign(paper_score=scores)


def _normal(value: Any) -> Any:
    """One form per value: null for None/NaN/NA, bools, floats for other numbers (128 == 128.0)."""
    if value is None or value is pd.NA or (isinstance(value, Real) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return float(value) if isinstance(value, Real) else value

"""The results files of a run, schema 1 (README, "Where results go"): the only writer and reader of them.

- ``predictions.jsonl``: one JSON object per answered sample, appended and flushed as each
  answer is made, so a killed run keeps every finished sample and continues from there.
- ``results.json``: written once at the end, atomically (temporary file, fsync, rename), so a
  reader never sees half a file and an earlier complete file is never lost to a crash.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEMA = 1
RESULTS_NAME = "results.json"


class RunBlock(TypedDict):
    model: str
    press: str
    dataset: str
    tasks: list[str]
    compression_ratio: float | None  # null where the press evicts no tokens or kv_budget is used
    kv_budget: int | None
    key_ratio: float | None  # null where the press prunes no key channels
    value_ratio: float | None
    recovery: str | None
    token_window: int | None  # observation window of the token press (SnapKV, PyramidKV)
    channel_window: int | None  # observation window of the channel press (SparK, ThinK)
    seed: int
    n_samples: int
    n_failed: int  # samples that raised (scored as empty answers, errors in predictions.jsonl)
    git_sha: str | None
    started_at: str  # ISO 8601, UTC
    finished_at: str
    config_hash: str
    config: dict[str, Any]  # the resolved config, less Hydra's own settings


class MemoryBlock(TypedDict):
    kv_cache_bytes: int  # bytes the cache holds after compression, all layers, mean over prefills
    kv_cache_dense_bytes: int  # the same prefills uncompressed
    peak_gpu_bytes: int | None  # CUDA peak allocated, null without CUDA
    peak_rss_bytes: int


class TimingBlock(TypedDict):
    prefill_s: float  # summed over samples (a shared prefill is split between its questions)
    decode_s: float
    total_s: float  # wall time of the sample loop of this process


class Results(TypedDict):
    schema: int
    run: RunBlock
    scores: dict[str, float]  # per task, plus "average"
    # official sub-scores: LongBench-E {task: {"0-4k"|"4-8k"|"8k+": score}}, LongBench-v2
    # {"all": {"easy"|"hard"|"short"|"medium"|"long": score}}; null for an empty group; {} otherwise
    breakdown: dict[str, dict[str, float | None]]
    memory: MemoryBlock
    timing: TimingBlock


class Prediction(TypedDict, total=False):
    id: str
    task: str
    prediction: str
    answers: list[str]
    score: float  # the task metric on this sample alone, 0-100
    context_tokens: int
    kv_cache_bytes: int
    kv_cache_dense_bytes: int
    prefill_s: float
    decode_s: float
    error: str  # only on a sample that raised (its prediction is "", its score 0); retried on resume


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that ``path`` holds either its old content or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(path: Path, results: Results) -> None:
    write_json_atomic(path, results)


def read_results(path: Path) -> Results:
    with open(path) as handle:
        results = json.load(handle)
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {results.get('schema')!r}, this version reads {SCHEMA}")
    return results


class PredictionLog:
    """Append-only ``predictions.jsonl``; reading it back skips a torn last line."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, Prediction]:
        """The complete records already written, by sample id."""
        if not self.path.exists():
            return {}
        done: dict[str, Prediction] = {}
        with open(self.path) as handle:
            lines = handle.read().split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # the last line, cut by a crash mid-write
                    log.warning("%s: ignoring a torn last line (a crash mid-write)", self.path)
                    continue
                raise ValueError(f"{self.path}:{number} is not valid JSON") from None
            done[record["id"]] = record
        return done

    def repair(self) -> None:
        """Drop a torn last line so that new records start on a line of their own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data[: data.rfind(b"\n") + 1]
            self.path.write_bytes(keep)

    def append(self, record: Prediction) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


RUN_COLUMNS = (
    "model", "press", "dataset", "compression_ratio", "kv_budget", "key_ratio", "value_ratio", "recovery",
    "seed", "n_samples", "config_hash", "finished_at",
)  # fmt: skip


def load_results(root: str | Path) -> pd.DataFrame:
    """Every ``results.json`` under ``root`` as a tidy frame: one row per run and task (the
    ``average`` included as a task). Columns: the run block's knobs, every scalar knob of the
    resolved config (``token_window``, ``compress_questions``, ...; ``context_length`` for RULER),
    memory and timing, and ``path``. Where several runs share a config hash, the newest
    (``finished_at``) wins."""
    import pandas as pd

    rows = []
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        results = read_results(path)
        run = {k: results["run"][k] for k in RUN_COLUMNS}
        config = results["run"].get("config", {})
        knobs = {k: v for k, v in config.items() if not isinstance(v, (dict, list)) and k not in run}
        if "context_length" in config.get("dataset", {}):
            knobs["context_length"] = config["dataset"]["context_length"]
        extra = {**knobs, **results["memory"], **results["timing"], "path": str(path.parent)}
        rows += [{**run, "task": task, "score": score, **extra} for task, score in results["scores"].items()]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    newest = frame.groupby("config_hash")["finished_at"].transform("max")
    return frame[frame["finished_at"] == newest].reset_index(drop=True)


def budget_label(row: Mapping[str, Any]) -> str:
    """How many tokens a run keeps, as the paper's tables head their blocks."""
    if _present(row["kv_budget"]):
        return f"kv_budget={int(row['kv_budget'])}"
    if _present(row["compression_ratio"]):
        return f"compression_ratio={row['compression_ratio']:g}"
    return "full cache"


def press_label(row: Mapping[str, Any]) -> str:
    """A press with its key ratio, as the paper's table rows: ``snap_spark (λ=0.8)``."""
    return row["press"] if not _present(row["key_ratio"]) else f"{row['press']} (λ={row['key_ratio']:g})"


def paper_table(frame: pd.DataFrame, values: str = "score") -> pd.DataFrame:
    """The paper's layout: one row per (model, dataset, budget, press with key ratio), one
    column per task, ``average`` last, plus ``kv_ratio`` (KV bytes held / dense). ``values``
    picks the column shown per task (``paper_score`` for the published ones)."""
    labelled = frame.assign(budget=frame.apply(budget_label, axis=1), row=frame.apply(press_label, axis=1))
    index = ["model", "dataset", "budget", "row"]
    table = labelled.pivot_table(index=index, columns="task", values=values, aggfunc="first")
    tasks = [c for c in table.columns if c != "average"] + (["average"] if "average" in table.columns else [])
    memory = labelled.groupby(index)[["kv_cache_bytes", "kv_cache_dense_bytes"]].first()
    table = table[tasks].assign(kv_ratio=memory["kv_cache_bytes"] / memory["kv_cache_dense_bytes"])
    table.columns.name = None
    return table


def relative_scores(frame: pd.DataFrame, baseline: str = "snapkv") -> pd.DataFrame:
    """``frame`` with ``baseline_score`` (the ``baseline`` press's score on the same model,
    dataset, budget and task) and ``relative_score`` = score / baseline_score (NaN where the
    baseline has no run or scores 0)."""
    if baseline not in set(frame["press"]):
        raise ValueError(
            f"baseline press {baseline!r} has no run here; presses: {sorted(set(frame['press']))}"
        )
    labelled = frame.assign(budget=frame.apply(budget_label, axis=1))
    keys = ["model", "dataset", "budget", "task"]
    base = labelled[labelled["press"] == baseline].groupby(keys)["score"].first().rename("baseline_score")
    merged = labelled.join(base, on=keys)
    merged["relative_score"] = merged["score"] / merged["baseline_score"].where(merged["baseline_score"] != 0)
    return merged


def _present(value: Any) -> bool:
    return value is not None and value == value  # NaN != NaN

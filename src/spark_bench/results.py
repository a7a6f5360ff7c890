"""The results files of a run, schema 1 (README, "Where results go"): the only writer and reader of them.

- ``predictions.jsonl``: one JSON object per answered sample, appended and flushed as each
  answer is made, so a killed run keeps every finished sample and continues from there.
- ``results.json``: written once at the end, atomically (temporary file, fsync, rename), so a
  reader never sees half a file and an earlier complete file is never lost to a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

# budget_label and press_label are read from here by notebooks written before labels.py.
from spark_bench import knobs
from spark_bench.labels import budget_label as budget_label
from spark_bench.labels import label_runs
from spark_bench.labels import press_label as press_label
from spark_bench.provenance import FRAME_COLUMNS, result_code_version

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
    # then one field per knob of spark_bench.knobs (compression_ratio, kv_budget, key_ratio, ...),
    # null where the press does not read it
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


class TimingBlock(TypedDict, total=False):
    # Summed over samples; a prefill of several questions is split between them. A prefill
    # shared with other points of a sweep job counts whole for each point (with all their
    # compressions): see shared_prefill_samples and compress_s.
    prefill_s: float
    decode_s: float
    total_s: float  # wall time of the sample loop of this process (of every point of a shared job)
    shared_prefill_samples: int  # samples answered from a prefill shared with other points
    compress_s: float | None  # this point's own compression within those; null when none shared


class GitBlock(TypedDict):
    sha: str | None  # the commit of the spark_bench checkout; null for an installed package
    dirty: bool | None  # the checkout's code (src, conf, sweeps, run.py, pyproject.toml) differs from it
    diff_sha256: str | None  # of that difference (tracked diff and untracked files), null when clean


class DeviceBlock(TypedDict, total=False):
    type: str  # "cuda" or "cpu"
    cpu: str  # CPU model
    cpu_count: int
    gpu: str  # GPU name, on CUDA only (as gpu_count, cuda, driver)
    gpu_count: int
    cuda: str | None  # the CUDA version torch was built with
    driver: str | None  # the NVIDIA driver version


class ProvenanceBlock(TypedDict):
    code_version: str  # "<sha12>", "<sha12>+dirty.<diff12>" or "spark_bench <version>"
    git: GitBlock
    versions: dict[str, str | None]  # python, torch, transformers, kvpress, datasets, spark_bench
    device: DeviceBlock
    dtype: str | None  # of the model as loaded
    attn_implementation: str | None  # of the model as loaded
    host: str
    slurm: dict[str, str] | None  # job_id, array_job_id, array_task_id, cluster, node; null outside SLURM
    answers_by_code_version: dict[str, int]  # a resumed run's answers may come from other code


class Results(TypedDict):
    schema: int
    run: RunBlock
    scores: dict[str, float]  # per task, plus "average"
    # official sub-scores: LongBench-E {task: {"0-4k"|"4-8k"|"8k+": score}}, LongBench-v2
    # {"all": {"easy"|"hard"|"short"|"medium"|"long": score}}; null for an empty group; {} otherwise
    breakdown: dict[str, dict[str, float | None]]
    memory: MemoryBlock
    timing: TimingBlock
    provenance: ProvenanceBlock  # added within schema 1: absent from files written before it


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
    code_version: str  # of the code that answered (provenance.code_version); absent in older files
    prefill_shared_by: int  # only on a sample whose prefill several points shared: how many
    compress_s: float  # with it: this point's own compression within that prefill (prefill_s: all of it)
    error: str  # only on a sample that raised (its prediction is "", its score 0); retried on resume


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; once the block has written it
    whole, it is synced and renamed over ``path``, so ``path`` only ever holds its old content
    or the complete new one. On an error the temporary file goes and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _DEFAULT_MODE & ~_umask())  # mkstemp's 0600 would hide results from the group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_DEFAULT_MODE = 0o666  # what open() creates a file with, before the umask


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that ``path`` holds either its old content or the complete new one."""
    with atomic_output(path) as tmp, open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")


def write_results(path: Path, results: Results) -> None:
    write_json_atomic(path, results)


def read_results(path: Path) -> Results:
    with open(path) as handle:
        results = json.load(handle)
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {results.get('schema')!r}, this version reads {SCHEMA}")
    return results


class PredictionLog:
    """Append-only ``predictions.jsonl``; reading it back skips a torn last line (a crash
    mid-write) and names any other damage by ``file:line`` with what to do: the file holds the
    answers of earlier runs, so it is never rewritten to get past a bad line."""

    # Every field ``append`` writes (``error`` aside), with its JSON types: a resumed record is
    # scored and summed with the new ones, so one that lacks a field would fail the run's end.
    FIELDS = (
        ("id", str), ("task", str), ("prediction", str), ("answers", list), ("score", (int, float)),
        ("context_tokens", int), ("kv_cache_bytes", int), ("kv_cache_dense_bytes", int),
        ("prefill_s", (int, float)), ("decode_s", (int, float)),
    )  # fmt: skip
    FIX = (
        "fix or delete that line (a deleted sample is answered again), or set rerun=true to start "
        "over (earlier outputs move to previous/)"
    )

    def __init__(self, path: Path):
        self.path = path

    def read(self, tasks: Mapping[str, str] | None = None) -> dict[str, Prediction]:
        """The complete records already written, by sample id. ``tasks`` (each sample id of the
        run -> its task), if given, also rejects a record of a sample the run does not ask: it
        comes from other data or another run, and would be scored as this one's.

        Raises ValueError naming the file and line, and what to do."""
        if not self.path.exists():
            return {}
        done: dict[str, Prediction] = {}
        lines = self._lines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8
                if number == len(lines):  # the last line, cut by a crash mid-write
                    log.warning("%s: ignoring a torn last line (a crash mid-write)", self.path)
                    continue
                raise ValueError(f"{self.path}:{number} is not valid JSON: {self.FIX}") from None
            problem = self._problem(record, tasks)
            if problem:
                raise ValueError(f"{self.path}:{number} {problem}: {self.FIX}")
            done[record["id"]] = record
        return done

    def _lines(self) -> list[bytes]:
        """The file's lines; the last one, without its newline, may be torn."""
        try:
            return self.path.read_bytes().split(b"\n")
        except OSError as err:  # a directory, no permission
            raise ValueError(
                f"cannot read {self.path} ({err.strerror or err}): move it out of {self.path.parent}, "
                "or set rerun=true to start over (earlier outputs move to previous/)"
            ) from None

    def _problem(self, record: Any, tasks: Mapping[str, str] | None) -> str | None:
        """What makes ``record`` unusable for a resume, or None."""
        if not isinstance(record, dict):
            return f"is a JSON {type(record).__name__}, not a record (a JSON object)"
        missing = [name for name, _ in self.FIELDS if name not in record]
        if missing:
            return f"lacks the field(s) {missing}"
        for name, kinds in self.FIELDS:
            value = record[name]
            if isinstance(value, bool) or not isinstance(value, kinds):
                expected = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
                return f"has {name}={value!r}, not of type {expected}"
        sample, task = record["id"], record["task"]
        if tasks is not None and sample not in tasks:
            return f"answers sample {sample!r}, not one of this run's (the data changed, or another run's)"
        if tasks is not None and tasks[sample] != task:
            return f"says sample {sample!r} is of task {task!r}; in this run it is of {tasks[sample]!r}"
        return None

    def repair(self) -> None:
        """End the file on a newline so that new records start on a line of their own: a torn
        last line (a crash mid-write, never a whole record) is dropped, a whole last record
        without its newline kept."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        last = data[data.rfind(b"\n") + 1 :]
        try:
            json.loads(last)
        except ValueError:
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])
            return
        with open(self.path, "ab") as handle:
            handle.write(b"\n")

    def append(self, record: Prediction) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


RUN_COLUMNS = (
    "model", "press", "dataset", *(k.name for k in knobs.KNOBS if k.in_every_result),
    "seed", "n_samples", "config_hash", "finished_at",
)  # fmt: skip
# The index of the paper-layout table: one block per model, dataset, budget and setting.
TABLE_INDEX = ["model", "dataset", "budget", "setting", "row"]
# What a complete results.json holds, block by block (a half-written or foreign file lacks some).
REQUIRED = {
    "run": RUN_COLUMNS,
    "scores": (),
    "memory": ("kv_cache_bytes", "kv_cache_dense_bytes"),
    "timing": (),
}


def load_results(root: str | Path) -> pd.DataFrame:
    """Every ``results.json`` under ``root`` as a tidy frame: one row per run and task (the
    ``average`` included as a task). Columns: the run block's knobs, every scalar knob of the
    resolved config (``token_window``, ``compress_questions``, ...; ``context_length`` for RULER),
    every field of its nested blocks as a dotted column (``model.dtype``, ``dataset.tasks``,
    ``press.press.window_size``), memory and timing, provenance (``code_version``,
    ``<library>_version``, ``device``, ``slurm_job_id``) and ``path``.

    Where several results share a config (``previous/`` after a rerun, a copied tree), the
    newest (``finished_at``) is kept and the others are listed in ``frame.attrs["superseded"]``;
    a file that is not a complete results.json (half-written, damaged, another schema) is
    skipped with a warning naming it and listed in ``frame.attrs["skipped"]``."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        try:
            rows += _frame_rows(path, read_results(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("skipped %s: not a complete results.json (%s)", path, err)
            skipped.append(str(path))
    frame = pd.DataFrame(rows)
    superseded: list[str] = []
    if not frame.empty:
        runs = frame.drop_duplicates("path").sort_values(["finished_at", "path"])
        newest = runs.groupby("config_hash")["path"].last()
        superseded = sorted(set(runs["path"]) - set(newest))
        if superseded:
            log.info(
                "%d older result(s) of a config superseded by its newest: %s", len(superseded), superseded
            )
        frame = frame[frame["path"].isin(set(newest))].reset_index(drop=True)
    frame.attrs.update(skipped=skipped, superseded=superseded)
    return frame


def _frame_rows(path: Path, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The frame's rows of one results.json, after checking that it is complete."""
    for block, keys in REQUIRED.items():
        missing = [k for k in keys if k not in results[block]]
        if missing:
            raise KeyError(f"its {block} block lacks {missing}")
    if not results["scores"] or not all(isinstance(v, (int, float)) for v in results["scores"].values()):
        raise ValueError(f"its scores are not numbers per task: {results['scores']!r}")
    run = {k: results["run"][k] for k in RUN_COLUMNS}
    config = results["run"].get("config", {})
    knobs = {k: v for k, v in config.items() if not isinstance(v, (dict, list)) and k not in run}
    if "context_length" in config.get("dataset", {}):
        knobs["context_length"] = config["dataset"]["context_length"]
    nested = {k: v for k, v in config.items() if isinstance(v, dict)}
    extra = {
        **knobs,
        **_flatten(nested),
        **results["memory"],
        **results["timing"],
        **_provenance_columns(results.get("provenance") or {}, results["run"]),
        "path": str(path.parent),
    }
    return [{**run, "task": task, "score": score, **extra} for task, score in results["scores"].items()]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config blocks as dotted scalar columns; a list becomes its items joined by commas."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flatten(value, f"{name}.")
        elif isinstance(value, list):
            flat[name] = ",".join(map(str, value))
        else:
            flat[name] = value
    return flat


def _provenance_columns(provenance: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for column, keys in FRAME_COLUMNS.items():
        value: Any = provenance
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        out[column] = value
    if out["device"] is None and isinstance(provenance.get("device"), Mapping):
        out["device"] = provenance["device"].get("cpu")
    if out["code_version"] is None:  # written before provenance was recorded: its git sha
        out["code_version"] = result_code_version({"run": run})
    return out


def paper_table(frame: pd.DataFrame, values: str = "score") -> pd.DataFrame:
    """The paper's layout: one row per (model, dataset, budget, setting, press with key ratio
    and any press knob that separates runs), one column per task, ``average`` last, plus
    ``kv_ratio`` (KV bytes held / dense). ``setting`` is empty unless the runs of a model and
    dataset differ in a run-wide field (``labels.label_runs``). ``values`` picks the column
    shown per task (``paper_score`` for the published ones)."""
    labelled = label_runs(frame)
    table = labelled.pivot_table(
        index=TABLE_INDEX, columns="task", values=values, aggfunc="first", dropna=False
    )
    table = table.dropna(how="all")
    tasks = [c for c in table.columns if c != "average"] + (["average"] if "average" in table.columns else [])
    memory = labelled.groupby(TABLE_INDEX)[["kv_cache_bytes", "kv_cache_dense_bytes"]].first()
    table = table[tasks].assign(kv_ratio=memory["kv_cache_bytes"] / memory["kv_cache_dense_bytes"])
    table.columns.name = None
    return table


def relative_scores(frame: pd.DataFrame, baseline: str = "snapkv") -> pd.DataFrame:
    """``frame``, labelled (``labels.label_runs``), with ``baseline_score`` (the ``baseline``
    press's score on the same model, dataset, budget, setting and task) and ``relative_score``
    = score / baseline_score (NaN where the baseline has no run, several runs or scores 0)."""
    if baseline not in set(frame["press"]):
        raise ValueError(
            f"baseline press {baseline!r} has no run here; presses: {sorted(set(frame['press']))}"
        )
    labelled = label_runs(frame)
    keys = ["model", "dataset", "budget", "setting", "task"]
    base = labelled[labelled["press"] == baseline]
    several = base.duplicated(keys, keep=False)
    if several.any():  # the baseline ran with several press knobs there: no single reference
        log.warning(
            "baseline press %r has several runs per table cell (%s): those cells get no relative score",
            baseline,
            sorted(set(base.loc[several, "row"])),
        )
        base = base[~several]
    merged = labelled.join(base.set_index(keys)["score"].rename("baseline_score"), on=keys)
    merged["relative_score"] = merged["score"] / merged["baseline_score"].where(merged["baseline_score"] != 0)
    return merged

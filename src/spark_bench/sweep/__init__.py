"""Multirun bookkeeping: what each job of a sweep did, and the summary at the end.

Every job of a Hydra multirun (basic launcher or SLURM through submitit) appends lines to
``<sweep dir>/jobs.jsonl``: ``started`` when it holds its run directory (with its host, process
and SLURM job), then done, skipped (a complete ``results.json`` of the same config was
already there) or failed (with the error and the job's log file). The ``SweepSummary``
callback, run by Hydra in the launching process once every job has returned, reads those lines
and says what happened, so a failed point of a long grid is named with its log, not lost in
Hydra's exit code. A failed point returns normally to Hydra (``run.py``), so that the other
points run and the summary is made; the summary then exits 1. (On SLURM the failed point's job
therefore ends COMPLETED: ``jobs.jsonl`` and ``summary.json`` say what really happened.)
Outside a multirun nothing is recorded. ``python -m spark_bench.sweep status <sweep dir>``
(``status.py``) tells the same from these files when the launching process is gone.

A job may run several points that share their prefills (the sweeper's ``share_prefill``):
``shared_jobs.json`` tells such a job its points, and ``as_point`` gives each point, while the
job works on it, Hydra's runtime config as its own job would have had (its overrides and group
choices), so that its run name, identity and ``jobs.jsonl`` lines are its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from spark_bench.provenance import slurm_job
from spark_bench.results import atomic_output

log = logging.getLogger(__name__)

JOBS_FILE = "jobs.jsonl"
SUMMARY_FILE = "summary.json"
POINTS_FILE = "points.jsonl"  # every point of the launch, written by the sweeper (spark_bench.sweeper)
SHARED_JOBS_FILE = "shared_jobs.json"  # the points of each job that runs several (spark_bench.sweeper)
# What a job did; "merged": the point was not launched, another point of the sweep runs its config.
STATUSES = ("done", "skipped", "failed", "merged")
STARTED = "started"  # a job holds its run directory; its outcome follows


def _hydra() -> Any | None:
    """Hydra's runtime config of this job when it is one point of a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def in_multirun() -> bool:
    return _hydra() is not None


def interrupts_the_job(err: BaseException) -> bool:
    """Whether ``err`` was raised by the job's scheduler, not by the work: on SLURM, submitit's
    signal handler raises ``UncompletedJobError`` wherever the job is when its time limit comes
    with no requeue left. Caught as a sample's failure, that sample would be scored as an empty
    answer, and a job finishing in its last minutes would publish it."""
    try:
        from submitit.core.utils import UncompletedJobError
    except ImportError:  # no SLURM launcher installed: nothing can raise it
        return False
    return isinstance(err, UncompletedJobError)


def record_job(
    status: str, run_dir: Path | None = None, error: BaseException | None = None, note: str | None = None
) -> None:
    """Append this job's outcome to its sweep's ``jobs.jsonl`` (one short O_APPEND write, so
    concurrent SLURM jobs on a shared filesystem do not interleave lines); ``note`` says more
    (e.g. why a point was skipped)."""
    if status not in (STARTED, *STATUSES):
        raise ValueError(f"job status {status!r} is not one of {[STARTED, *STATUSES]}")
    hydra_cfg = _hydra()
    if hydra_cfg is None:
        return
    output_dir = Path(hydra_cfg.runtime.output_dir)
    entry = {
        "job": hydra_cfg.job.num,
        "overrides": list(hydra_cfg.overrides.task),
        "status": status,
        "run_dir": str(run_dir) if run_dir is not None else None,
        "log": str(output_dir / f"{hydra_cfg.job.name}.log"),
        "error": None if error is None else f"{type(error).__name__}: {error}",
        # where and when, so that a job that dies without an outcome can be told from a running one
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": _slurm_job_id(),
    }
    if note is not None:
        entry["note"] = note
    if error is not None and not isinstance(error, ValueError):  # a bug, not bad input: keep its trace
        entry["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    _append(Path(hydra_cfg.sweep.dir) / JOBS_FILE, entry)


def _slurm_job_id() -> str | None:
    """This job's id as sacct and submitit's folders name it: ``<array>_<task>`` in an array."""
    job = slurm_job()
    if job is None:
        return None
    if "array_job_id" in job and "array_task_id" in job:
        return f"{job['array_job_id']}_{job['array_task_id']}"
    return job["job_id"]


def record_merged(sweep_dir: Path, point: dict[str, Any], runner: dict[str, Any]) -> None:
    """Record, at launch, a point not launched because ``runner``, another point of the sweep,
    runs its config (the same run directory)."""
    entry = {
        "job": point["job"],
        "overrides": point["overrides"],
        "status": "merged",
        "run_dir": point["run_dir"],
        "log": None,
        "error": None,
        "same_as": runner["overrides"],
    }
    _append(Path(sweep_dir) / JOBS_FILE, entry)


def write_points(sweep_dir: Path, plan: list[dict[str, Any]]) -> None:
    """``points.jsonl``: every point of this launch, its run directory and job (or the job it
    is merged into); replaced whole by a relaunch."""
    fields = ("overrides", "run_dir", "status", "job", "error")
    with atomic_output(Path(sweep_dir) / POINTS_FILE) as tmp:
        tmp.write_text("".join(json.dumps({k: point.get(k) for k in fields}) + "\n" for point in plan))


def read_points(sweep_dir: Path) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / POINTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class SharedPoint:
    """A point of a job that runs several: what the sweeper composed for it."""

    overrides: list[str]
    choices: dict[str, str]  # Hydra's runtime choices (press=..., model=...)
    config: dict[str, Any]  # its task config as Hydra hands it to a job, interpolations unresolved

    def task_config(self) -> DictConfig:
        cfg = OmegaConf.create(self.config)
        OmegaConf.set_struct(cfg, True)  # as Hydra hands a job its config
        return cfg


def write_shared_jobs(sweep_dir: Path, jobs: dict[int, list[SharedPoint]]) -> None:
    """``shared_jobs.json``: job number -> the points it runs, its own first; replaced whole by a
    relaunch (a job of an earlier launch then finds another first point, and runs its own alone)."""
    payload = {str(job): [asdict(point) for point in points] for job, points in jobs.items()}
    with atomic_output(Path(sweep_dir) / SHARED_JOBS_FILE) as tmp:
        tmp.write_text(json.dumps(payload))


def shared_points() -> list[SharedPoint] | None:
    """The points this job runs together, its own first; None for a job of one point."""
    hydra_cfg = _hydra()
    if hydra_cfg is None:
        return None
    path = Path(hydra_cfg.sweep.dir) / SHARED_JOBS_FILE
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(str(hydra_cfg.job.num))
    if not entry:
        return None
    points = [SharedPoint(**point) for point in entry]
    if points[0].overrides != list(hydra_cfg.overrides.task):
        log.warning(
            "%s was written by a later launch of this sweep directory (job %s is another point there): "
            "this job runs its own point alone",
            path,
            hydra_cfg.job.num,
        )
        return None
    return points


@contextlib.contextmanager
def as_point(point: SharedPoint) -> Iterator[None]:
    """Within a job of several points, Hydra's runtime config as ``point``'s own job would have
    it (its overrides and group choices), put back after the block."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    before = (list(hydra_cfg.overrides.task), OmegaConf.to_container(hydra_cfg.runtime.choices))
    _set_identity(hydra_cfg, point.overrides, point.choices)
    try:
        yield
    finally:
        _set_identity(hydra_cfg, *before)


def _set_identity(hydra_cfg: DictConfig, overrides: list[str], choices: dict[str, Any]) -> None:
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.overrides.task = overrides
        hydra_cfg.runtime.choices = choices


def _append(path: Path, entry: dict[str, Any]) -> None:
    line = (json.dumps(entry) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The newest record of each job of a sweep (a relaunch appends new ones)."""
    path = Path(sweep_dir) / JOBS_FILE
    if not path.is_file():
        return []
    newest: dict[tuple[str, ...], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            newest[tuple(entry["overrides"])] = entry
    return sorted(newest.values(), key=lambda e: (e["job"], e["status"] == "merged"))


def common_overrides(points: list[dict[str, Any]]) -> set[str]:
    """The overrides every point of a sweep has: left out where points are told apart."""
    sets = [set(point["overrides"]) for point in points]
    return set.intersection(*sets) if len(sets) > 1 else set()


def point_label(overrides: list[str], common: set[str]) -> str:
    return " ".join(o for o in overrides if o not in common) or " ".join(overrides)


def summarize(jobs: list[dict[str, Any]]) -> str:
    counts = Counter(job["status"] for job in jobs)
    common = common_overrides(jobs)
    head = f"sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    if counts["merged"]:
        head += f", {counts['merged']} merged at launch (the config of another point)"
    lines = [head]
    for job in jobs:
        if job["status"] == "failed":
            lines.append(
                f"  FAILED #{job['job']} {' '.join(job['overrides'])}: {job['error']} (log: {job['log']})"
            )
        elif job["status"] == "merged":
            lines.append(
                f"  merged {point_label(job['overrides'], common)}: run by #{job['job']} "
                f"{point_label(job['same_as'], common)}"
            )
    return "\n".join(lines)


class SweepSummary(Callback):
    """Says, at the end of a multirun, which points were done, skipped or failed, and writes
    ``<sweep dir>/summary.json``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [_ended(job) for job in read_jobs(sweep_dir)]
        if not jobs:
            return
        text = summarize(jobs)
        counts = Counter(job["status"] for job in jobs)
        payload = {"counts": {s: counts[s] for s in STATUSES}, "jobs": jobs}
        with atomic_output(sweep_dir / SUMMARY_FILE) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))
        log.info("%s", text)
        if counts["failed"]:
            raise SystemExit(1)


def _ended(job: dict[str, Any]) -> dict[str, Any]:
    """A job's record once every job has returned: one that started and recorded no outcome
    died on the way (killed, out of memory), which is a failure."""
    if job["status"] != STARTED:
        return job
    return {**job, "status": "failed", "error": "the job ended without recording an outcome (killed?)"}

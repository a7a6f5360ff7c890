"""What each point of a sweep is doing, told from its files: works after the launcher is gone.

    python -m spark_bench.sweep status <sweep dir>

The launcher (Hydra's process, which waits on every job) writes the sweep summary when the last
job returns; a closed terminal or a logged-out session takes it down, and then nothing tells the
state of the grid. This module tells it from what the sweep leaves on disk: ``points.jsonl``
(every point of the launch, written by the sweeper), ``jobs.jsonl`` (each job's ``started`` line
and its outcome), the run directories, and ``sacct`` when SLURM is there. Each point is one of:

- ``todo``: not started yet (queued, or waiting for a free slot of the job array);
- ``running``: started and not finished (with how many samples it has answered);
- ``done`` / ``skipped`` / ``failed``: as the job recorded it; a job that ended without
  recording an outcome (killed, out of memory, past its time limit with no requeue left) is
  ``failed``, with what SLURM or the process table says;
- ``merged``: not launched, another point of the sweep runs its config.

Points that share their prefills run in one job, and are listed with its number.

It then writes ``summary.json`` as the launcher would have (the launcher's keys, plus ``todo`` and
``running`` counts while any point is still open).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from spark_bench import paths, sweep
from spark_bench.results import atomic_output, read_results

OPEN_STATES = ("todo", "running")
SACCT_TIMEOUT_S = 30
SUBMITIT_DIR = ".submitit"  # conf/hydra/launcher/slurm.yaml: submitit_folder
# sacct states of a job that is not over yet (requeued: waiting to start again)
SLURM_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING")
SLURM_RUNNING = ("RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING")


def point_states(sweep_dir: Path, use_sacct: bool = True) -> list[dict[str, Any]]:
    """One entry per point of the sweep's latest launch (or, for a sweep launched before
    ``points.jsonl`` existed, per point that ``jobs.jsonl`` names), in launch order."""
    sweep_dir = Path(sweep_dir)
    jobs = {tuple(entry["overrides"]): entry for entry in sweep.read_jobs(sweep_dir)}
    points = sweep.read_points(sweep_dir) or [
        {"overrides": e["overrides"], "run_dir": e["run_dir"], "status": "launched", "job": e["job"]}
        for e in jobs.values()
        if e["status"] != "merged"
    ]
    slurm_ids = _slurm_ids_of_launch(sweep_dir, points)
    for point in points:
        entry = jobs.get(tuple(point["overrides"]))
        if entry is not None and entry.get("slurm_job_id"):
            slurm_ids[point["job"]] = entry["slurm_job_id"]
    sacct = _sacct(sorted(set(slurm_ids.values()))) if use_sacct and slurm_ids else {}

    states = []
    for point in points:
        slurm_id = slurm_ids.get(point["job"])
        state = _state(point, jobs.get(tuple(point["overrides"])), slurm_id, sacct, points)
        if state.get("log") is None and slurm_id is not None and point["status"] != "merged":
            job_log = sweep_dir / SUBMITIT_DIR / slurm_id / f"{slurm_id}_0_log.err"
            state["log"] = str(job_log) if job_log.is_file() else None
        states.append(state)
    return states


def _state(
    point: dict[str, Any],
    entry: dict[str, Any] | None,
    slurm_id: str | None,
    sacct: dict[str, str],
    points: list[dict[str, Any]],
) -> dict[str, Any]:
    state = {
        "job": point["job"],
        "overrides": point["overrides"],
        "status": "todo",
        "run_dir": point.get("run_dir"),
        "log": None,
        "error": point.get("error"),
    }
    if point["status"] == "merged":
        state.update(status="merged", same_as=_runner_of(point, points))
        return state
    slurm_state = sacct.get(slurm_id) if slurm_id else None
    if slurm_id is not None:
        state["slurm_job_id"] = slurm_id
    if slurm_state is not None:
        state["slurm_state"] = slurm_state
    if entry is not None:
        state.update({k: entry[k] for k in ("run_dir", "log", "error", "note") if entry.get(k) is not None})
    if entry is not None and entry["status"] in sweep.STATUSES:
        state["status"] = entry["status"]
        return state
    if entry is not None:  # started, no outcome yet
        state["status"], reason = _started_state(entry, slurm_state)
        if reason:
            state["error"] = reason
    elif _complete(state["run_dir"]):  # finished, its outcome not recorded in this sweep
        state.update(status="done", note="results.json complete")
    elif slurm_state is not None and slurm_state not in SLURM_WAITING:
        if slurm_state in SLURM_RUNNING:
            state["status"] = "running"  # starting up: Python, the data, the model
        else:
            state.update(
                status="failed", error=f"SLURM job {slurm_id} ended {slurm_state} before the run started"
            )
    if state["status"] == "running":
        state["answered"] = _answered(state["run_dir"])
    return state


def _runner_of(point: dict[str, Any], points: list[dict[str, Any]]) -> list[str] | None:
    """The launched point that runs a merged point's config (its job may run other points too)."""
    for other in points:
        if other["status"] != "merged" and other["run_dir"] == point["run_dir"]:
            return other["overrides"]
    return None


def _started_state(entry: dict[str, Any], slurm_state: str | None) -> tuple[str, str | None]:
    """A job that recorded its start and no outcome: running, or dead without a word."""
    if slurm_state is not None:
        if slurm_state in SLURM_RUNNING or slurm_state in SLURM_WAITING:
            return "running", None
        return "failed", f"SLURM job {entry['slurm_job_id']} ended {slurm_state} without recording an outcome"
    if entry.get("host") == socket.gethostname() and entry.get("pid"):
        if _alive(entry["pid"]):
            return "running", None
        return "failed", f"process {entry['pid']} ended without recording an outcome (killed?)"
    return "running", None  # another machine, no sacct: nothing here can tell otherwise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _complete(run_dir: str | None) -> bool:
    """Whether ``run_dir`` holds a finished run, as the runner decides when it skips one: a
    readable ``results.json`` with no failed sample (those the runner answers again)."""
    if run_dir is None:
        return False
    try:
        results = read_results(Path(run_dir) / paths.RESULTS_FILE)
    except (OSError, ValueError):  # absent, half-written, another schema
        return False
    return not results.get("run", {}).get("n_failed")


def _answered(run_dir: str | None) -> int | None:
    if run_dir is None:
        return None
    try:
        with open(Path(run_dir) / paths.PREDICTIONS_FILE, "rb") as file:
            return sum(1 for line in file if line.strip())
    except OSError:
        return None


def _slurm_ids_of_launch(sweep_dir: Path, points: list[dict[str, Any]]) -> dict[int, str]:
    """Job number -> SLURM job id, from the submitit folders of the latest launch (one per job,
    ``<array>_<task>``, or ``<id>`` for a lone job; created at submission, before any job runs):
    the launcher submits its jobs in job-number order, one array per batch."""
    root = sweep_dir / SUBMITIT_DIR
    points_file = sweep_dir / sweep.POINTS_FILE
    if not root.is_dir() or not points_file.is_file():
        return {}
    since = points_file.stat().st_mtime - 1  # written by the sweeper just before submission
    folders = [f.name for f in root.iterdir() if f.is_dir() and f.stat().st_mtime >= since]
    ids = sorted((_id_key(name), name) for name in folders if _id_key(name) is not None)
    launched = sorted({p["job"] for p in points if p["status"] != "merged"})  # a job may run several
    if len(ids) != len(launched):  # not the layout we know: leave it to the jobs' own records
        return {}
    return {job: name for job, (_, name) in zip(launched, ids, strict=True)}


def _id_key(name: str) -> tuple[int, int] | None:
    array, _, task = name.partition("_")
    if not array.isdigit() or (task and not task.isdigit()):
        return None
    return int(array), int(task or 0)


def _sacct(job_ids: list[str]) -> dict[str, str]:
    """SLURM job id -> state (first word: ``CANCELLED by 0`` -> ``CANCELLED``); {} without sacct."""
    if shutil.which("sacct") is None:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=SACCT_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):  # no accounting storage, a slow controller
        return {}
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if job_id and state:
            states[job_id.strip()] = state.split()[0]
    return states


def report(states: list[dict[str, Any]]) -> str:
    counts = Counter(state["status"] for state in states)
    order = (*OPEN_STATES, *sweep.STATUSES)
    head = f"{len(states)} points: " + ", ".join(f"{counts[s]} {s}" for s in order if counts[s])
    common = sweep.common_overrides(states)
    lines = [head]
    for state in states:
        label = sweep.point_label(state["overrides"], common)
        line = f"{state['status']:8} #{state['job']:<4} {label}"
        if state["status"] == "merged":
            line += f"  (run by #{state['job']} {sweep.point_label(state.get('same_as') or [], common)})"
        if state.get("answered") is not None:
            line += f"  ({state['answered']} samples answered)"
        if state.get("slurm_state"):
            line += f"  [SLURM {state['slurm_job_id']} {state['slurm_state']}]"
        if state["status"] == "failed" and state.get("error"):
            line += f": {state['error']}"
        if state.get("log"):
            line += f"  log: {state['log']}"
        lines.append(line)
    return "\n".join(lines)


def write_summary(sweep_dir: Path, states: list[dict[str, Any]]) -> Path:
    """``summary.json`` as the launcher writes it, with ``todo``/``running`` counts while open."""
    counts = Counter(state["status"] for state in states)
    payload_counts = {s: counts[s] for s in sweep.STATUSES}
    payload_counts.update({s: counts[s] for s in OPEN_STATES if counts[s]})
    path = Path(sweep_dir) / sweep.SUMMARY_FILE
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"counts": payload_counts, "jobs": states}, indent=1))
    return path

"""``python -m spark_bench.sweep status``: a sweep's state told from its files, launcher or not."""

from __future__ import annotations

import json
import os
import socket

import pytest

from spark_bench import paths, sweep
from spark_bench.sweep import status
from tests.helpers import run_py, status_cli

DEAD_PID = 2**22 + 1  # above Linux's pid_max default: no process has it


@pytest.mark.subprocess
def test_after_a_finished_sweep_status_writes_the_summary_the_launcher_wrote(tmp_path):
    grid = ["-m", "+sweep=smoke", "press=no_press,snapkv", f"paths.results_root={tmp_path / 'res'}"]
    proc = run_py(*grid, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary_path = tmp_path / "sweep" / sweep.SUMMARY_FILE
    by_launcher = json.loads(summary_path.read_text())
    summary_path.unlink()  # as if the launcher had gone before the end

    shown = status_cli(tmp_path / "sweep")
    assert shown.returncode == 0, shown.stderr
    assert "4 points: 2 done, 2 merged" in shown.stdout
    by_status = json.loads(summary_path.read_text())
    assert by_status["counts"] == by_launcher["counts"] == {"done": 2, "skipped": 0, "failed": 0, "merged": 2}
    strip = ("time", "host", "pid", "slurm_job_id", "same_as", "log")
    assert sorted(
        json.dumps({k: v for k, v in j.items() if k not in strip}) for j in by_status["jobs"]
    ) == sorted(
        json.dumps({k: v for k, v in j.items() if k not in strip}) for j in by_launcher["jobs"]
    )  # status lists the points in grid order, the launcher by job (the two points share one)


def _sweep_dir(tmp_path, n_points: int = 5):
    """Points 0..n-1 of a launch, each with its own run directory; point 4 merged into 3."""
    plan = []
    for index in range(n_points):
        run_dir = tmp_path / "res" / f"point{min(index, 3)}"
        plan.append({"overrides": [f"seed={index}"], "run_dir": str(run_dir), "status": "launched",
                     "job": index, "error": None})  # fmt: skip
    plan[4].update(status="merged", job=3)
    sweep_dir = tmp_path / "sweep"
    sweep.write_points(sweep_dir, plan)
    return sweep_dir, plan


def _record(sweep_dir, point, state, **extra):
    sweep._append(sweep_dir / sweep.JOBS_FILE, {"job": point["job"], "overrides": point["overrides"],
                  "status": state, "run_dir": point["run_dir"], "log": f"/logs/{point['job']}.log",
                  "error": None, **extra})  # fmt: skip


@pytest.mark.subprocess
def test_each_state_is_told_from_the_files_a_sweep_leaves(tmp_path):
    sweep_dir, plan = _sweep_dir(tmp_path)
    here = socket.gethostname()
    _record(sweep_dir, plan[0], "started", host=here, pid=DEAD_PID)
    _record(sweep_dir, plan[0], "done")
    _record(sweep_dir, plan[1], "started", host=here, pid=DEAD_PID)  # then killed: no outcome
    _record(sweep_dir, plan[2], "started", host=here, pid=os.getpid())  # alive: this test
    predictions = tmp_path / "res" / "point2" / paths.PREDICTIONS_FILE
    predictions.parent.mkdir(parents=True)
    predictions.write_text('{"id": "a"}\n{"id": "b"}\n')
    # point 3: nothing recorded yet (queued)

    states = status.point_states(sweep_dir, use_sacct=False)
    assert [s["status"] for s in states] == ["done", "failed", "running", "todo", "merged"]
    assert "ended without recording an outcome" in states[1]["error"] and states[1]["log"] == "/logs/1.log"
    assert states[2]["answered"] == 2
    assert states[4]["same_as"] == ["seed=3"]
    text = status.report(states)
    assert text.splitlines()[0] == "5 points: 1 todo, 1 running, 1 done, 1 failed, 1 merged"
    assert "running  #2    seed=2  (2 samples answered)" in text

    status.write_summary(sweep_dir, states)
    counts = json.loads((sweep_dir / sweep.SUMMARY_FILE).read_text())["counts"]
    assert counts == {"done": 1, "skipped": 0, "failed": 1, "merged": 1, "todo": 1, "running": 1}
    shown = status_cli(sweep_dir, "--no-sacct")
    assert shown.returncode == 1 and "failed   #1" in shown.stdout  # a failed point: exit 1, as the launcher


def test_a_point_finished_elsewhere_counts_as_done(tmp_path):
    sweep_dir, _ = _sweep_dir(tmp_path)
    results = tmp_path / "res" / "point3" / paths.RESULTS_FILE
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"schema": 1, "run": {"n_failed": 0}, "scores": {"average": 1.0}}))
    retried = tmp_path / "res" / "point1" / paths.RESULTS_FILE  # failed samples: the runner reruns it
    retried.parent.mkdir(parents=True)
    retried.write_text(json.dumps({"schema": 1, "run": {"n_failed": 2}, "scores": {"average": 1.0}}))
    half = tmp_path / "res" / "point0" / paths.RESULTS_FILE
    half.parent.mkdir(parents=True)
    half.write_text('{"scores": {"aver')  # a half-written file is not a finished run
    states = status.point_states(sweep_dir, use_sacct=False)
    assert [s["status"] for s in states] == ["todo", "todo", "todo", "done", "merged"]


@pytest.mark.subprocess
def test_status_of_a_directory_that_is_no_sweep_is_one_line(tmp_path):
    shown = status_cli(tmp_path)
    assert shown.returncode == 2 and shown.stderr.count("\n") == 1
    assert f"{tmp_path} is not a sweep directory" in shown.stderr

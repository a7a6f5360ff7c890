"""Sweeps that share prefills (issue 19, item 3 and 4): the sweeper puts the points that differ
only in press and press knobs in one job, which answers each as that point alone would, and
each point resumes, skips and fails on its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_bench import paths, sweeper
from spark_bench.sweep import read_jobs, read_points
from spark_bench.sweep import status as sweep_status
from tests.helpers import ROOT, group_choices, read_jsonl, run_py

# What must not change when a point shares its prefill (timings and provenance may).
ANSWER_FIELDS = (
    "id",
    "task",
    "prediction",
    "answers",
    "score",
    "context_tokens",
    "kv_cache_bytes",
    "kv_cache_dense_bytes",
)
TINY = ["+sweep=smoke", "key_ratio=0.5"]  # tiny-llama, two tasks, short answers


def _plan(*points: tuple[str | None, str]) -> list[dict]:
    """Sweeper plan entries: (prefill key or None for a bad point, run directory)."""
    return [
        {
            "overrides": [f"p={i}"],
            "run_dir": run_dir,
            "status": "launched",
            "prefill_key": key,
            "shared": f"shared-{i}",
            "error": None if key else "bad",
        }
        for i, (key, run_dir) in enumerate(points)
    ]


def test_points_that_can_share_go_to_jobs_of_at_most_points_per_job_in_grid_order():
    plan = _plan(("a", "r0"), ("b", "r1"), ("a", "r2"), ("a", "r0"), ("a", "r3"), (None, "r4"), ("a", "r5"))
    sweeper._merge(plan)  # point 3 is point 0's run
    sweeper._share(plan, points_per_job=2)
    launched = sweeper._number_jobs(plan)
    assert [p["job"] for p in plan] == [0, 1, 0, 0, 2, 3, 2]
    assert launched == [["p=0"], ["p=1"], ["p=4"], ["p=5"]]  # a job's first point stands for it
    assert plan[3]["status"] == "merged" and plan[3]["merged_into"] == 0
    assert sweeper._shared_jobs(plan) == {0: ["shared-0", "shared-2"], 2: ["shared-4", "shared-6"]}

    alone = _plan(("a", "r0"), ("a", "r1"))
    sweeper._share(alone, points_per_job=1)  # share_prefill=false
    assert sweeper._number_jobs(alone) == [["p=0"], ["p=1"]] and sweeper._shared_jobs(alone) == {}


def test_a_job_never_holds_one_run_directory_twice():
    plan = _plan(("a", "r0"), ("a", "r0"), ("a", "r1"))  # dedupe=false: the repeat is not merged
    sweeper._share(plan, points_per_job=8)
    sweeper._number_jobs(plan)
    assert [p["job"] for p in plan] == [0, 1, 1]


@pytest.mark.parametrize("value", [0, -2, "x", True])
def test_points_per_job_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=f"points_per_job={value!r} must be a positive integer"):
        sweeper.job_size(True, value)
    with pytest.raises(ValueError, match="share_prefill='no' must be true or false"):
        sweeper.job_size("no", 8)
    assert sweeper.job_size(False, 8) == 1 and sweeper.job_size(True, 3) == 3


@pytest.mark.subprocess
def test_a_bad_sweeper_setting_is_named_before_anything_runs(tmp_path):
    proc = run_py("-m", *TINY, "hydra.sweeper.points_per_job=0", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode != 0
    assert "hydra.sweeper.points_per_job=0 must be a positive integer" in proc.stdout + proc.stderr
    assert not (tmp_path / "s").exists()


def _answers(run_dir: Path) -> list[dict]:
    return [{k: r[k] for k in ANSWER_FIELDS} for r in read_jsonl(run_dir / paths.PREDICTIONS_FILE)]


def _press(overrides: list[str]) -> str:
    (press,) = [o.split("=", 1)[1] for o in overrides if o.startswith("press=")]
    return press


def _run_dirs(sweep_dir: Path) -> dict[str, Path]:
    """Press -> run directory, of a sweep whose presses have one point each."""
    return {_press(p["overrides"]): Path(p["run_dir"]) for p in read_points(sweep_dir)}


def _same_as_alone(shared_root: Path, alone_root: Path) -> None:
    """Each run directory of ``shared_root`` answered and scored as the same one of ``alone_root``."""
    shared = sorted(shared_root.rglob(paths.RESULTS_FILE))
    assert shared and len(shared) == len(list(alone_root.rglob(paths.RESULTS_FILE)))
    for results_path in shared:
        twin = alone_root / results_path.relative_to(shared_root)
        assert _answers(results_path.parent) == _answers(twin.parent), results_path.parent.name
        mine, theirs = json.loads(results_path.read_text()), json.loads(twin.read_text())
        assert mine["scores"] == theirs["scores"] and mine["breakdown"] == theirs["breakdown"]
        assert mine["memory"]["kv_cache_bytes"] == theirs["memory"]["kv_cache_bytes"]
        assert mine["run"]["config_hash"] == theirs["run"]["config_hash"]


@pytest.mark.subprocess
def test_every_press_answers_in_a_shared_job_as_its_point_alone(tmp_path):
    """All of conf/press on the tiny Llama: observed_attention's eager model is another job;
    PyramidKV's per-layer attention another prefill of the same job."""
    presses = group_choices("press")
    grid = ["-m", *TINY, f"press={','.join(presses)}", "max_new_tokens=6"]
    shared = run_py(*grid, f"paths.results_root={tmp_path / 'shared'}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert shared.returncode == 0, shared.stdout[-3000:]
    # 12 presses prefill on the SDPA model (8 to a job), observed_attention on the eager one
    assert "Launching 3 jobs locally" in shared.stdout
    alone = run_py(
        *grid,
        "hydra.sweeper.share_prefill=false",
        f"paths.results_root={tmp_path / 'alone'}",
        f"hydra.sweep.dir={tmp_path / 'a'}",
    )
    assert alone.returncode == 0, alone.stdout[-3000:]
    assert f"Launching {len(presses)} jobs locally" in alone.stdout  # the switch: a job per point
    _same_as_alone(tmp_path / "shared", tmp_path / "alone")

    jobs = read_jobs(tmp_path / "s")
    assert sorted(_press(j["overrides"]) for j in jobs) == sorted(presses)
    assert {j["status"] for j in jobs} == {"done"} and len({j["job"] for j in jobs}) == 3
    assert all(Path(j["log"]).is_file() for j in jobs)
    by_press = {_press(j["overrides"]): Path(j["run_dir"]) for j in jobs}
    spark = json.loads((by_press["snap_spark"] / paths.RESULTS_FILE).read_text())
    assert spark["timing"]["shared_prefill_samples"] == spark["run"]["n_samples"] == 4
    assert 0 < spark["timing"]["compress_s"] < spark["timing"]["prefill_s"]
    record = read_jsonl(by_press["snap_spark"] / paths.PREDICTIONS_FILE)[0]
    assert record["prefill_shared_by"] >= 2 and record["compress_s"] > 0
    assert spark["run"]["press"] == "snap_spark"  # the point's own identity, not its job's first
    assert "prefill_shared_by" not in read_jsonl(by_press["observed_attention"] / paths.PREDICTIONS_FILE)[0]

    states = sweep_status.point_states(tmp_path / "s", use_sacct=False)
    assert [s["status"] for s in states] == ["done"] * len(presses)


@pytest.mark.subprocess
def test_each_point_of_a_stopped_job_resumes_on_its_own(tmp_path):
    """A job stopped half-way leaves its points at different places; the relaunch finishes each
    from there (a complete point skipped, a damaged one failed alone), as the points alone would."""
    grid = ["-m", *TINY, "press=snapkv,snap_think,snap_spark,think", "dataset.num_samples=3", "max_samples=3"]
    reference = run_py(
        *grid,
        f"paths.results_root={tmp_path / 'ref'}",
        f"hydra.sweep.dir={tmp_path / 'r'}",
        "hydra.sweeper.share_prefill=false",
    )
    assert reference.returncode == 0, reference.stdout[-3000:]
    subprocess.run(["cp", "-r", str(tmp_path / "ref"), str(tmp_path / "res")], check=True)
    dirs = _run_dirs(tmp_path / "r")
    snap_think, snap_spark, think = dirs["snap_think"], dirs["snap_spark"], dirs["think"]
    twin = {d: tmp_path / "res" / d.relative_to(tmp_path / "ref") for d in dirs.values()}
    kept = {}
    for run_dir, lines in ((snap_think, 2), (snap_spark, 5), (think, 0)):  # snapkv: complete
        (twin[run_dir] / paths.RESULTS_FILE).unlink()
        predictions = twin[run_dir] / paths.PREDICTIONS_FILE
        text = "".join(predictions.read_text().splitlines(keepends=True)[:lines])
        kept[run_dir] = text
        predictions.write_text(text + ('{"id": "torn' if run_dir is snap_think else ""))
    damaged = twin[think] / paths.PREDICTIONS_FILE
    damaged.write_text("not json\n{}\n")

    relaunch = run_py(*grid, f"paths.results_root={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / 's'}")
    assert relaunch.returncode == 1, relaunch.stdout[-3000:]  # think's damaged file fails think only
    assert "Launching 1 jobs locally" in relaunch.stdout
    status = {_press(j["overrides"]): j for j in read_jobs(tmp_path / "s")}
    assert {p: j["status"] for p, j in status.items()} == {
        "snapkv": "skipped",
        "snap_think": "done",
        "snap_spark": "done",
        "think": "failed",
    }
    assert "is not valid JSON" in status["think"]["error"]
    assert damaged.read_text() == "not json\n{}\n"  # the user's to mend, never rewritten
    for run_dir in (snap_think, snap_spark):
        assert (twin[run_dir] / paths.PREDICTIONS_FILE).read_text().startswith(kept[run_dir])
        assert _answers(twin[run_dir]) == _answers(run_dir)
        results = json.loads((twin[run_dir] / paths.RESULTS_FILE).read_text())
        assert results["scores"] == json.loads((run_dir / paths.RESULTS_FILE).read_text())["scores"]
    log = "".join(p.read_text() for p in (tmp_path / "s").rglob("*.log"))
    assert "resuming: 2 of 6 samples already answered" in log and "resuming: 5 of 6" in log


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_readme_sweep_killed_half_way_resumes_as_its_points_alone(tmp_path):
    """The README's SparK-vs-ThinK sweep on the embedded model (one sample per task at 1k
    tokens, short answers, for time): one job, killed once every point has answered its first
    context, then launched again; every point's answers equal the same point run alone."""
    grid = [
        "-m",
        "press=no_press,snapkv,snap_think,snap_spark",
        "key_ratio=0.5,0.8",
        "logger=none",
        "max_samples=1",
        "max_new_tokens=12",
        "dataset.context_length=1024",
    ]
    alone = run_py(
        *grid,
        "hydra.sweeper.share_prefill=false",
        f"paths.results_root={tmp_path / 'alone'}",
        f"hydra.sweep.dir={tmp_path / 'a'}",
        timeout=600,
    )
    assert alone.returncode == 0, alone.stdout[-3000:]

    command = [sys.executable, "run.py", *grid, f"paths.results_root={tmp_path / 'shared'}"]
    job = subprocess.Popen(
        [*command, f"hydra.sweep.dir={tmp_path / 's1'}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        found = list((tmp_path / "shared").rglob(paths.PREDICTIONS_FILE))
        if len(found) == 6 and all(p.read_text().count("\n") >= 1 for p in found):
            break
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    answered = [len(read_jsonl(p)) for p in (tmp_path / "shared").rglob(paths.PREDICTIONS_FILE)]
    assert answered == [1] * 6 and not list((tmp_path / "shared").rglob(paths.RESULTS_FILE))

    again = subprocess.run(
        [*command, f"hydra.sweep.dir={tmp_path / 's2'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Launching 1 jobs locally" in again.stdout
    _same_as_alone(tmp_path / "shared", tmp_path / "alone")
    log = "".join(p.read_text() for p in (tmp_path / "s2").rglob("*.log"))
    assert log.count("resuming: 1 of 2 samples already answered") == 6

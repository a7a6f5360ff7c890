"""Sweeps as SLURM jobs on a real local cluster (tests/slurm_cluster.py): failure isolation,
skip on relaunch, and a scancel'd job that finishes on relaunch with the uninterrupted scores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_bench.sweep import read_jobs
from tests.helpers import ROOT, run_py, status_cli

pytestmark = pytest.mark.slurm
SAMPLES_PER_TASK = 30  # the default dataset (RULER) runs two tasks
# per task, 400 new tokens each: about 75 s of tiny-model work here, more than one attempt's 20 to
# 50 s of answering (below), so at least one requeue, in about half the time of 2.5 minutes' work
REQUEUE_SAMPLES = 40
# SLURM checks time limits every 30 s and signals a job up to 30 s before its signal is due: with
# 1 s, a 1-minute job is signalled (and requeues itself) 30 to 60 s after it starts, leaving 20
# to 50 s of answering after the start-up: a few requeues, more than the default 5 may allow.
SIGNAL_S = 1
REQUEUE_LIMIT = 10
LAUNCH = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=3"]


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)  # sbatch/sacct of the launcher find the test cluster
    return {**os.environ, **slurm_cluster.env}


def sacct_jobs(env) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State"], env=env, capture_output=True, text=True
    )
    return [tuple(line.split("|")) for line in out.stdout.splitlines() if line.strip()]


def test_a_grid_submits_one_task_per_prefill_group_and_isolates_a_failure(slurm_env, tmp_path):
    """Twelve points: two presses at two key ratios on three contexts. snapkv reads no key_ratio
    (its second point merged at launch), and the three points of a context share its prefill:
    three SLURM jobs, none racing another for a run directory; the context that fails fails its
    own points and leaves the others complete."""
    before = len(sacct_jobs(slurm_env))

    def launch(name: str):
        return run_py(
            "-m", "+sweep=smoke", *LAUNCH, "press=snapkv,snap_spark", "key_ratio=0.5,0.8",
            "dataset.context_length=512,40,600",
            f"paths.results_root={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / name}", timeout=600,
        )  # fmt: skip

    first = launch("first")  # context_length=40 cannot hold a RULER prompt: those points fail
    assert first.returncode == 1, first.stderr[-3000:]
    jobs = sacct_jobs(slurm_env)[before:]
    assert len(jobs) == 3, jobs  # one job per context, each answering its three points
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["counts"] == {"done": 6, "skipped": 0, "failed": 3, "merged": 3}
    failed = [j for j in summary["jobs"] if j["status"] == "failed"]
    assert all("dataset.context_length=40" in j["overrides"] and Path(j["log"]).is_file() for j in failed)
    assert all("cannot hold the prompt" in j["error"] for j in failed)  # not a lock held by a twin
    assert len({j["job"] for j in summary["jobs"]}) == 3
    assert len(list((tmp_path / "res").rglob("results.json"))) == 6

    again = launch("again")  # the same sweep: the finished points are skipped, the failed ones rerun
    assert again.returncode == 1
    launched = [j["status"] for j in read_jobs(tmp_path / "again") if j["status"] != "merged"]
    assert sorted(launched) == ["failed"] * 3 + ["skipped"] * 6


def test_a_cancelled_job_finishes_on_relaunch_with_the_uninterrupted_scores(slurm_env, tmp_path):
    # enough work (~25 s) that the job is still answering well after scancel: a submitit job
    # bypasses SIGTERM and dies some seconds later, by SIGKILL (KillWait=2 s, then srun's wait)
    point = ["model=tiny-llama", "press=snap_spark", "logger=none", f"dataset.num_samples={SAMPLES_PER_TASK}",
             "max_new_tokens=96", "dataset.context_length=2048"]  # fmt: skip
    reference = run_py(
        *point, f"paths.results_root={tmp_path / 'reference'}", f"hydra.run.dir={tmp_path / 'h'}"
    )
    assert reference.returncode == 0, reference.stderr[-2000:]
    (reference_results,) = list((tmp_path / "reference").rglob("results.json"))

    command = [sys.executable, "run.py", "-m", *point, *LAUNCH, f"paths.results_root={tmp_path / 'res'}"]
    launcher = subprocess.Popen(
        [*command, f"hydra.sweep.dir={tmp_path / 'first'}"], cwd=ROOT, env=slurm_env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    predictions = None
    while time.monotonic() < deadline:  # wait until the job has answered a few samples
        found = list((tmp_path / "res").rglob("predictions.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            predictions = found[0]
            break
        time.sleep(0.5)
    assert predictions is not None, "the SLURM job never started answering"
    running = [job for job, state in sacct_jobs(slurm_env) if state == "RUNNING"]
    assert running, sacct_jobs(slurm_env)
    subprocess.run(["scancel", *running], env=slurm_env, check=True)
    launcher_log, _ = launcher.communicate(timeout=300)
    assert launcher.returncode != 0, launcher_log[-3000:]  # the launcher reports the cancelled job
    answered = len(predictions.read_text().splitlines())
    assert 3 <= answered < 2 * SAMPLES_PER_TASK and not list((tmp_path / "res").rglob("results.json"))

    relaunch = subprocess.run(
        [*command, f"hydra.sweep.dir={tmp_path / 'second'}"], cwd=ROOT, env=slurm_env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert relaunch.returncode == 0, relaunch.stdout[-3000:] + relaunch.stderr[-3000:]
    (results_path,) = list((tmp_path / "res").rglob("results.json"))
    results, reference_scores = (
        json.loads(results_path.read_text()),
        json.loads(reference_results.read_text()),
    )
    assert results["scores"] == reference_scores["scores"]
    assert results["run"]["n_samples"] == 2 * SAMPLES_PER_TASK
    job_logs = "".join(p.read_text() for p in (tmp_path / "second").rglob("*.log"))
    assert f"resuming: {answered} of {2 * SAMPLES_PER_TASK} samples already answered" in job_logs


def test_a_point_past_its_time_limit_requeues_itself_and_ends_as_an_uninterrupted_run(
    slurm_env, tmp_path, monkeypatch
):
    """About 75 s of work under a 1-minute time limit: submitit requeues the job at each
    limit (SIGUSR2 shortly before), each attempt continues from predictions.jsonl, and the
    launcher returns once the point is done, with the predictions of an uninterrupted run."""
    # one thread each: the reference runs alongside the SLURM job on our two cores (four
    # threads there slow both several times over); the job inherits the launcher's environment
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    point = ["model=tiny-llama", "press=snap_spark", "logger=none", f"dataset.num_samples={REQUEUE_SAMPLES}",
             "max_new_tokens=400", "dataset.context_length=2048"]  # fmt: skip
    reference = subprocess.Popen(
        [sys.executable, "run.py", *point, f"paths.results_root={tmp_path / 'reference'}",
         f"hydra.run.dir={tmp_path / 'h'}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    sweep = run_py(
        "-m", *point, *LAUNCH, "hydra.launcher.timeout_min=1", f"hydra.launcher.signal_delay_s={SIGNAL_S}",
        f"hydra.launcher.max_num_timeout={REQUEUE_LIMIT}", f"paths.results_root={tmp_path / 'res'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=1200,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-2000:]

    job_logs = sorted((tmp_path / "sweep" / ".submitit").rglob("*_log.*"))  # stderr and stdout, all attempts
    logs = "".join(p.read_text(errors="replace") for p in job_logs)
    # one line per requeue from SLURM itself (submitit's own line can be lost: its signal handler
    # logs into the file the interrupted job may be writing, and logging drops reentrant writes)
    requeues = len(re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE", logs))
    assert requeues >= 1 and "this job is timed-out" in logs, logs[-3000:]
    resumed = sorted({int(n) for n in re.findall(r"resuming: (\d+) of", logs)})
    assert len(resumed) == requeues and resumed[0] > 0, logs[-3000:]  # every attempt answered some
    (results_path,) = (tmp_path / "res").rglob("results.json")
    (reference_path,) = (tmp_path / "reference").rglob("results.json")
    results, expected = json.loads(results_path.read_text()), json.loads(reference_path.read_text())
    assert results["scores"] == expected["scores"] and results["run"]["n_failed"] == 0
    assert results["run"]["n_samples"] == 2 * REQUEUE_SAMPLES

    def answers(path: Path) -> list[tuple]:
        rows = [json.loads(line) for line in path.with_name("predictions.jsonl").read_text().splitlines()]
        return sorted((r["id"], r["prediction"], r["score"]) for r in rows)

    assert answers(results_path) == answers(reference_path)
    assert [j["status"] for j in read_jobs(tmp_path / "sweep")] == ["done"]


def test_status_tells_a_sweep_whose_launcher_is_gone(slurm_env, tmp_path):
    """The launcher killed while its jobs run (a closed terminal): the jobs go on, and `status`
    says which point runs and which waits, then, once they are over, writes the summary."""
    point = ["model=tiny-llama", "press=snap_spark", "logger=none", f"dataset.num_samples={SAMPLES_PER_TASK}",
             "max_new_tokens=96", "dataset.context_length=2048"]  # fmt: skip
    sweep_dir = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [sys.executable, "run.py", "-m", *point, "seed=0,1", *LAUNCH,
         f"paths.results_root={tmp_path / 'res'}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT, env=slurm_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # one job answers (one at a time: each takes the node's 2 CPUs)
        found = list((tmp_path / "res").rglob("predictions.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    launcher.kill()  # as a closed terminal takes it; the SLURM jobs are not its children
    launcher.wait(timeout=30)

    shown = status_cli(sweep_dir)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.startswith("2 points: 1 todo, 1 running"), shown.stdout
    assert "samples answered)  [SLURM" in shown.stdout and "RUNNING]" in shown.stdout
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 0, "skipped": 0, "failed": 0, "merged": 0, "todo": 1, "running": 1}

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(
        state in ("PENDING", "RUNNING", "COMPLETING") for _, state in sacct_jobs(slurm_env)
    ):
        time.sleep(1)
    shown = status_cli(sweep_dir)
    assert shown.returncode == 0 and shown.stdout.startswith("2 points: 2 done"), shown.stdout
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0, "merged": 0}
    assert all(Path(job["log"]).is_file() for job in summary["jobs"])

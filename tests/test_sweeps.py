"""Sweeps as config files, run locally: dry run, skip of finished points, failure isolation
with a summary, rerun. (The same against a real SLURM cluster: tests/test_slurm.py.)"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from spark_bench.config import validate
from spark_bench.sweep import read_jobs
from tests.helpers import ROOT, compose_config, group_choices, run_py

SWEEPS = sorted(p.stem for p in (Path(__file__).parents[1] / "sweeps").glob("*.yaml"))


def test_the_paper_grids_exist():
    assert {"longbench_budgets", "key_ratio_curve", "ruler_lengths", "longbench_v2", "smoke"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_composes_and_names_valid_choices(name):
    cfg = compose_config([f"+sweep={name}"])
    validate(cfg)  # the base point of the grid is a valid run
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params, f"{name} sweeps nothing"
    for key, values in params.items():
        values = [v.strip() for v in str(values).split(",")]
        if key in ("press", "model", "dataset"):
            unknown = set(values) - set(group_choices(key))
            assert not unknown, f"{name}: {key} has unknown choices {unknown}"
        else:
            for value in values:  # each point composes and passes the checks
                validate(compose_config([f"+sweep={name}", f"{key}={value}"]))


@pytest.mark.parametrize("name", ["longbench_budgets", "key_ratio_curve", "longbench_v2"])
def test_paper_grids_use_the_reference_windows(name):
    """The SparK reference: SnapKV/PyramidKV observe 64 queries, SparK/ThinK 32."""
    cfg = compose_config([f"+sweep={name}"])
    assert (cfg.token_window, cfg.channel_window) == (64, 32)


@pytest.mark.subprocess
def test_dry_run_of_the_paper_grid_lists_the_reference_windows(tmp_path):
    proc = run_py("-m", "+sweep=longbench_budgets", "dry_run=true", f"paths.results_root={tmp_path / 'res'}",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("todo", "done"))]
    # 56 points, 41 configs: presses without key pruning read no key_ratio, so their two
    # key_ratio points are one run, submitted once
    assert len(lines) == 41 and len({line.split()[-1] for line in lines}) == 41
    assert "merged at launch: 15 of 56 points" in proc.stdout + proc.stderr
    for press in ("snapkv", "pyramidkv"):
        assert any(f"/llama3.1-8b/{press}/budget128_tw64_" in line for line in lines)
    assert any("/llama3.1-8b/snap_spark/budget128_kr0.8_vr0.0_recmean_tw64_cw32_" in line for line in lines)
    assert not any("_w32" in line or "tw32" in line for line in lines)


def test_slurm_launcher_config_is_documented_and_resolves():
    cfg = compose_config(["+sweep=longbench_budgets", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.mem_gb == 64 and launcher.timeout_min == 480  # 8B preset
    tiny = compose_config(["+sweep=smoke", "hydra/launcher=slurm"]).hydra.launcher
    assert tiny.gpus_per_node == 0 and tiny.cpus_per_task == 2


@pytest.mark.subprocess
def test_dry_run_lists_the_jobs_and_runs_nothing(tmp_path):
    proc = run_py("-m", "+sweep=smoke", "dry_run=true", f"paths.results_root={tmp_path / 'res'}",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("todo", "done"))]
    # 4 points, 3 configs: snapkv reads no key_ratio
    assert len(lines) == 3 and all(line.startswith("todo") for line in lines)
    assert "merged at launch: 1 of 4 points" in proc.stdout + proc.stderr
    assert sum("snap_spark-tiny-llama-ruler-cr0.1_kr0.8" in line for line in lines) == 1
    assert not (tmp_path / "res").exists()


def sweep(tmp_path, name: str, *extra: str):
    return run_py(
        "-m", "+sweep=smoke", "press=snapkv", "key_ratio=0.5", "dataset.context_length=512,40,600", *extra,
        f"paths.results_root={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / name}",
    )  # fmt: skip


@pytest.mark.subprocess
def test_a_failed_point_leaves_the_others_complete_and_a_relaunch_skips_them(tmp_path):
    first = sweep(tmp_path, "first")  # context_length=40 cannot hold a RULER prompt: that point fails
    assert first.returncode == 1
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 1, "merged": 0}
    (failed,) = [job for job in summary["jobs"] if job["status"] == "failed"]
    assert "dataset.context_length=40" in failed["overrides"] and "cannot hold the prompt" in failed["error"]
    assert Path(failed["log"]).is_file() and "cannot hold the prompt" in Path(failed["log"]).read_text()
    output = first.stdout + first.stderr
    assert "sweep: 2 done, 0 skipped, 1 failed" in output and failed["log"] in output
    assert len(list((tmp_path / "res").rglob("results.json"))) == 2

    again = sweep(tmp_path, "again")
    assert again.returncode == 1
    jobs = read_jobs(tmp_path / "again")
    assert [j["status"] for j in jobs] == ["skipped", "failed", "skipped"]
    assert "sweep: 0 done, 2 skipped, 1 failed" in again.stdout + again.stderr


@pytest.mark.subprocess
def test_points_of_one_config_run_once_and_the_summary_lists_the_merged_ones(tmp_path):
    """no_press reads no key_ratio: its two key_ratio points are one run (as are snapkv's).
    (Sharing prefills, all four would be one job: tests/test_shared_sweeps.py.)"""
    grid = [
        "-m",
        "+sweep=smoke",
        "press=no_press,snapkv,snap_spark",
        f"paths.results_root={tmp_path / 'res'}",
        "hydra.sweeper.share_prefill=false",
    ]
    proc = run_py(*grid, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Launching 4 jobs locally" in proc.stdout + proc.stderr  # of 6 points
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 0, "merged": 2}

    def job_of(press: str, key_ratio: float) -> dict:
        (job,) = [
            j for j in summary["jobs"] if {f"press={press}", f"key_ratio={key_ratio}"} <= set(j["overrides"])
        ]
        return job

    for press in ("no_press", "snapkv"):
        merged, kept = job_of(press, 0.8), job_of(press, 0.5)
        assert merged["status"] == "merged" and kept["status"] == "done"
        assert merged["run_dir"] == kept["run_dir"] and merged["same_as"] == kept["overrides"]
        assert merged["job"] == kept["job"]
    assert "2 merged" in proc.stdout + proc.stderr
    assert len(list((tmp_path / "res").rglob("results.json"))) == 4

    plain = run_py(*grid, "hydra.sweeper.dedupe=false", f"hydra.sweep.dir={tmp_path / 'plain'}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "Launching 6 jobs locally" in plain.stdout + plain.stderr  # the switch: every point its job
    assert sorted(job["status"] for job in read_jobs(tmp_path / "plain")) == ["skipped"] * 6


@pytest.mark.subprocess
def test_rerun_moves_earlier_outputs_aside(tmp_path):
    args = ["+sweep=smoke", "press=snapkv", f"paths.results_root={tmp_path / 'res'}",
            f"hydra.run.dir={tmp_path / 'h'}"]  # fmt: skip
    assert run_py(*args).returncode == 0
    (results,) = list((tmp_path / "res").rglob("results.json"))
    first = results.read_text()
    assert run_py(*args, "rerun=true").returncode == 0
    (archived,) = list(results.parent.glob("previous/*/results.json"))
    assert archived.read_text() == first and results.is_file()
    assert (archived.parent / "predictions.jsonl").is_file()


@pytest.mark.subprocess
def test_cluster_defaults_come_from_one_untracked_local_file(tmp_path):
    """conf/local/default.yaml (here found on Hydra's search path) fills the SLURM launcher and
    changes no run's identity; without it the launcher's fields are null as before."""
    from spark_bench.config import validate

    example = Path(__file__).parents[1] / "conf" / "local" / "example.yaml"
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "default.yaml").write_text(example.read_text())
    slurm = ["+sweep=longbench_budgets", "hydra/launcher=slurm"]
    local = compose_config([*slurm, f"hydra.searchpath=[file://{tmp_path}]"])
    launcher = OmegaConf.to_container(local.hydra.launcher, resolve=True)
    assert (launcher["partition"], launcher["account"], launcher["qos"]) == ("gpu", "my-lab", None)
    assert launcher["setup"][0].startswith("source ") and launcher["additional_parameters"] == {}
    plain = compose_config(slurm)
    assert plain.hydra.launcher.partition is None and plain.hydra.launcher.setup is None
    assert validate(local).config_hash == validate(plain).config_hash
    override = compose_config(
        [*slurm, f"hydra.searchpath=[file://{tmp_path}]", "hydra.launcher.partition=big"]
    )
    assert override.hydra.launcher.partition == "big"  # the command line still wins
    ignored = subprocess.run(
        ["git", "check-ignore", "conf/local/default.yaml"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0  # never committed by accident

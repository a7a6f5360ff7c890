"""W&B mirrors each Hydra job as its own run, offline here (no W&B server): read back from the
run files the project wrote."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from spark_bench.tracking import WandbTracker, summary
from tests.helpers import run_py
from tests.helpers.wandb_records import run_contents


@pytest.mark.subprocess
def test_a_two_point_multirun_writes_two_offline_runs(tmp_path):
    proc = run_py(
        "-m", "model=tiny-llama", "press=snapkv,snap_spark", "logger=wandb", "max_samples=1",
        "max_new_tokens=3", "dataset.context_length=512", f"paths.results_root={tmp_path / 'res'}",
        f"hydra.sweep.dir={tmp_path / 'sweep-7'}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted((tmp_path / "res").rglob("offline-run-*"))
    assert len(runs) == 2, runs
    contents = sorted((run_contents(r) for r in runs), key=lambda c: c["name"])
    assert [c["name"].split("-")[0] for c in contents] == ["snap_spark", "snapkv"]
    assert contents[0]["name"] == "snap_spark-tiny-llama-ruler-cr0.1_kr0.5_vr0.0_recmean_tw32_cw32"
    assert {c["group"] for c in contents} == {"sweep-7"}  # grouped by the multirun
    for c in contents:
        results_file = next(
            Path(p) for p in (tmp_path / "res").rglob("results.json") if c["name"].split("-")[0] in str(p)
        )
        results = json.loads(results_file.read_text())
        assert c["config"]["model"]["name"] == "tiny-llama" and c["config"]["max_samples"] == 1
        assert c["config"]["press"] == results["run"]["config"]["press"]
        assert c["config"]["provenance"] == results["provenance"]  # code, versions, device, job
        for key, value in summary(results).items():
            assert c["summary"][key] == value, key
        assert {"scores/average", "memory/kv_cache_bytes", "memory/peak_rss_bytes", "timing/total_s"} <= set(
            c["summary"]
        )
        assert c["summary"]["predictions/nrows"] == 2 and c["summary"]["predictions/_type"] == "table-file"


def test_wandb_failures_only_warn(tmp_path, monkeypatch):
    import wandb

    def refuse(**_):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = WandbTracker({"project": "p", "mode": "online"}, "name", {}, tmp_path)
        tracker.log_results({"scores": {"average": 1.0}}, None)
        tracker.finish()
    assert any("W&B tracking disabled: no network" in str(w.message) for w in caught)


def test_summary_flattens_breakdown_and_drops_nulls():
    results = {
        "scores": {"qasper": 10.0, "average": 10.0},
        "breakdown": {"qasper": {"0-4k": 12.0, "8k+": None}},
        "memory": {"kv_cache_bytes": 5, "peak_gpu_bytes": None},
        "timing": {"total_s": 1.5},
        "run": {"n_samples": 3},
    }
    assert summary(results) == {
        "scores/qasper": 10.0, "scores/average": 10.0, "breakdown/qasper/0-4k": 12.0,
        "memory/kv_cache_bytes": 5, "timing/total_s": 1.5, "n_samples": 3,
    }  # fmt: skip


@pytest.mark.subprocess
def test_a_resumed_point_continues_its_wandb_run_and_a_rerun_starts_a_new_one(tmp_path):
    point = ["model=tiny-llama", "press=snapkv", "logger=wandb", "max_samples=2", "max_new_tokens=3",
             "dataset.context_length=512", f"paths.results_root={tmp_path / 'res'}"]  # fmt: skip

    def launch(*extra: str) -> list[dict]:
        proc = run_py(*point, *extra, f"hydra.run.dir={tmp_path / 'job'}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs = sorted((tmp_path / "res").rglob("offline-run-*"), key=lambda p: p.stat().st_mtime)
        return [run_contents(r) for r in runs]

    (first,) = launch()
    (results,) = (tmp_path / "res").rglob("results.json")
    predictions = results.parent / "predictions.jsonl"
    predictions.write_text(predictions.read_text().splitlines(keepends=True)[0])  # killed after one answer
    results.unlink()
    resumed = launch()[-1]
    assert resumed["id"] == first["id"]  # the same W&B run, continued
    assert resumed["summary"]["n_samples"] == 4
    rerun = launch("rerun=true")[-1]
    assert rerun["id"] != first["id"]  # rerun=true: a new attempt, a new W&B run

"""What made a result is in its results.json, and a result of other code is not taken as current."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import torch

from spark_bench import provenance
from spark_bench.results import load_results
from spark_bench.runner import plan, run
from tests.helpers import ROOT


@pytest.mark.subprocess
def test_results_say_which_code_libraries_and_machine_made_them(make_config, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    results = run(make_config("press=snapkv", "max_samples=1"))
    made = results["provenance"]
    assert set(made["versions"]) == {"python", "torch", "transformers", "kvpress", "datasets", "spark_bench"}
    assert made["versions"]["torch"] == torch.__version__ and all(made["versions"].values())
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert made["git"]["sha"] == head == results["run"]["git_sha"]
    assert isinstance(made["git"]["dirty"], bool)
    assert (made["git"]["diff_sha256"] is not None) == made["git"]["dirty"]
    assert made["code_version"] == provenance.code_version() and made["code_version"].startswith(head[:12])
    assert made["device"]["type"] == "cpu" and made["device"]["cpu"]
    assert made["dtype"] == "float32" and made["attn_implementation"] == "sdpa"  # tiny-llama as loaded
    assert made["slurm"] == {"job_id": "4242", "array_task_id": "3"}
    saved = json.loads(next(Path(make_config().paths.results_root).rglob("results.json")).read_text())
    assert saved["provenance"] == made
    assert set(load_results(make_config().paths.results_root)["code_version"]) == {made["code_version"]}


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout laid out like spark_bench's, which git_state reads instead of ours."""
    root = tmp_path / "checkout"
    for name in ("src/spark_bench/press.py", "conf/config.yaml", "notebooks/n.ipynb", "README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=root, check=True)
    monkeypatch.setattr(provenance, "_checkout_root", lambda: root)
    return root


def test_a_changed_checkout_is_dirty_with_a_hash_of_its_change(checkout):
    state = provenance.git_state.__wrapped__  # uncached: the checkout changes under the test
    clean = state()
    assert len(clean["sha"]) == 40 and clean["dirty"] is False and clean["diff_sha256"] is None
    (checkout / "README.md").write_text("docs only\n")
    (checkout / "notebooks/n.ipynb").write_text("{}\n")
    assert state()["dirty"] is False  # docs and notebooks do not change results
    (checkout / "src/spark_bench/press.py").write_text("changed\n")
    edited = state()
    assert edited["dirty"] is True and edited["sha"] == clean["sha"]
    (checkout / "src/spark_bench/press.py").write_text("changed again\n")
    assert state()["diff_sha256"] != edited["diff_sha256"]  # another change, another hash
    (checkout / "src/spark_bench/press.py").write_text("src/spark_bench/press.py\n")
    (checkout / "conf/new_press.yaml").write_text("x: 1\n")  # an untracked config counts too
    untracked = state()
    assert untracked["dirty"] is True and untracked["diff_sha256"] not in (None, edited["diff_sha256"])


def test_the_gpu_is_named_with_its_count_cuda_and_driver(monkeypatch, tmp_path):
    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build\n")
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", driver)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    found = provenance.device.__wrapped__()
    assert found["type"] == "cuda" and found["gpu"] == "NVIDIA H100 80GB HBM3" and found["gpu_count"] == 4
    assert found["cuda"] == "12.8" and found["driver"] == "550.54.15" and found["cpu"]


def _made_by_other_code(results_path: Path) -> bytes:
    results = json.loads(results_path.read_text())
    results["provenance"]["code_version"] = "0123456789ab"
    results_path.write_text(json.dumps(results))
    return results_path.read_bytes()


def test_a_result_of_other_code_is_skipped_with_a_warning_and_rerun_stale_runs_it(make_config, caplog):
    cfg = make_config("press=snapkv", "max_samples=1")
    run(cfg)
    (path,) = Path(cfg.paths.results_root).rglob("results.json")
    stale = _made_by_other_code(path)
    assert plan(cfg).startswith("stale")
    with caplog.at_level(logging.WARNING, logger="spark_bench"):
        skipped = run(cfg)
    assert skipped["provenance"]["code_version"] == "0123456789ab" and path.read_bytes() == stale
    assert "made by other code (0123456789ab; this is " in caplog.text and "rerun=stale" in caplog.text

    again = make_config("press=snapkv", "max_samples=1", "rerun=stale")
    assert plan(again).startswith("todo")
    fresh = run(again)
    assert fresh["provenance"]["code_version"] == provenance.code_version()
    (archived,) = path.parent.glob("previous/*/results.json")
    assert archived.read_bytes() == stale  # the stale result is kept, not lost
    assert plan(again).startswith("done")
    assert run(again)["run"]["finished_at"] == fresh["run"]["finished_at"]  # current: skipped, not rerun


def test_a_result_written_before_provenance_is_judged_by_its_git_sha(make_config):
    cfg = make_config("press=snapkv", "max_samples=1")
    run(cfg)
    (path,) = Path(cfg.paths.results_root).rglob("results.json")
    results = json.loads(path.read_text())
    del results["provenance"]
    path.write_text(json.dumps(results))
    clean = not provenance.git_state()["dirty"]
    assert plan(cfg).startswith("done" if clean else "stale")  # same commit, clean: current
    results["run"]["git_sha"] = "f" * 40
    path.write_text(json.dumps(results))
    assert plan(cfg).startswith("stale")


def test_rerun_takes_only_false_stale_or_true(make_config):
    from spark_bench.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"rerun='old' is not one of \[False, 'stale', True\]"):
        validate(make_config("rerun=old"))


def test_resuming_answers_of_other_code_says_so_and_counts_them(make_config, caplog):
    cfg = make_config("press=snapkv", "max_samples=2")
    run(cfg)
    (path,) = Path(cfg.paths.results_root).rglob("results.json")
    predictions = path.parent / "predictions.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert {r["code_version"] for r in records} == {provenance.code_version()}
    records[0]["code_version"] = "0123456789ab"  # answered before a fix landed, then the job died
    del records[1]["code_version"]  # and one by a version that recorded none
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records[:2]))
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="spark_bench"):
        results = run(cfg)
    assert "resuming answers made by other code (1 by 0123456789ab, 1 by unrecorded; this is " in caplog.text
    assert results["provenance"]["answers_by_code_version"] == {
        "0123456789ab": 1,
        "unrecorded": 1,
        provenance.code_version(): 2,
    }


def test_an_unreadable_results_json_is_set_aside_not_overwritten(make_config, caplog):
    cfg = make_config("press=snapkv", "max_samples=1")
    run(cfg)
    (path,) = Path(cfg.paths.results_root).rglob("results.json")
    path.write_text('{"schema": 1, "run": {"model": "someone\'s only copy"')  # cut short
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="spark_bench"):
        results = run(cfg)
    (aside,) = path.parent.glob("previous/*/results.json")
    assert aside.read_bytes() == damaged and "could not be read: moved to" in caplog.text
    assert json.loads(path.read_text())["scores"] == results["scores"]

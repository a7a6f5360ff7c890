"""Crash safety and isolation: a SIGKILL'd run resumes to the uninterrupted result, one process
per run directory, and a failing sample is recorded and retried, never silently dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from spark_bench import engine, paths
from spark_bench.config import ConfigError, validate
from spark_bench.run_lock import RunLock
from spark_bench.runner import run
from tests.helpers import ROOT, read_jsonl, run_py

# Fields that legitimately differ between two runs of one config: clocks and the machine's state.
VOLATILE_RUN = ("started_at", "finished_at")
VOLATILE_RECORD = ("prefill_s", "decode_s")


def comparable(results_path):
    results = json.loads(results_path.read_text())
    for key in VOLATILE_RUN:
        results["run"].pop(key)
    results.pop("timing")
    results["memory"].pop("peak_rss_bytes")
    predictions = [
        {k: v for k, v in r.items() if k not in VOLATILE_RECORD}
        for r in read_jsonl(results_path.parent / paths.PREDICTIONS_FILE)
    ]
    return results, sorted(predictions, key=lambda r: r["id"])


@pytest.mark.subprocess
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["model=tiny-llama", "press=snap_spark", "logger=none", "max_samples=8", "max_new_tokens=24",
            "dataset.context_length=1024"]  # fmt: skip
    assert (
        run_py(*args, f"paths.results_root={tmp_path / 'a'}", f"hydra.run.dir={tmp_path / 'ha'}").returncode
        == 0
    )

    command = [sys.executable, "run.py", *args, f"paths.results_root={tmp_path / 'b'}"]
    victim = subprocess.Popen([*command, f"hydra.run.dir={tmp_path / 'hb1'}"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline, killed_at = time.monotonic() + 120, None
    while time.monotonic() < deadline and victim.poll() is None:
        found = list((tmp_path / "b").rglob(paths.PREDICTIONS_FILE))
        if found and len(found[0].read_bytes().splitlines()) >= 3:
            victim.send_signal(signal.SIGKILL)
            killed_at = len(found[0].read_bytes().splitlines())
            break
        time.sleep(0.02)
    victim.wait()
    assert killed_at is not None and victim.returncode == -signal.SIGKILL, "could not kill the run mid-way"
    resumed = run_py(*args, f"paths.results_root={tmp_path / 'b'}", f"hydra.run.dir={tmp_path / 'hb2'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming:" in resumed.stdout + resumed.stderr

    (a,) = list((tmp_path / "a").rglob(paths.RESULTS_FILE))
    (b,) = list((tmp_path / "b").rglob(paths.RESULTS_FILE))
    results_a, predictions_a = comparable(a)
    results_b, predictions_b = comparable(b)
    assert results_b == results_a  # every field but clocks and timings, byte for byte in JSON
    assert predictions_b == predictions_a  # no sample lost, none duplicated
    lines = [json.loads(line)["id"] for line in (b.parent / paths.PREDICTIONS_FILE).read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 16


@pytest.mark.subprocess
def test_a_second_process_on_the_same_config_stops_with_a_clear_error(make_config, tmp_path):
    cfg = make_config("press=snapkv")
    out_dir = paths.run_dir(cfg.paths.results_root, validate(cfg))
    out_dir.mkdir(parents=True)
    with RunLock(out_dir):  # as if another process were running this config
        with pytest.raises(
            ConfigError, match=rf"another process \(pid {os.getpid()} on host [^)]+\) is running this config"
        ):
            run(cfg)
        proc = run_py("model=tiny-llama", "press=snapkv", "logger=none", "max_samples=2", "max_new_tokens=4",
                      "dataset.context_length=512", f"paths.results_root={cfg.paths.results_root}",
                      f"hydra.run.dir={tmp_path / 'h'}")  # fmt: skip
        assert proc.returncode == 2 and "another process" in proc.stderr
    assert run(cfg)["run"]["n_samples"] == 4  # once released, the config runs


def test_a_failing_sample_is_recorded_scored_as_wrong_and_retried(make_config, monkeypatch, tmp_path, caplog):
    real_answer = engine.answer
    calls = {"n": 0}

    def flaky(model, tokenizer, press, prompt, lengths, kv_budget=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second prefill: as if CUDA ran out of memory on it
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_answer(model, tokenizer, press, prompt, lengths, kv_budget)

    cfg = make_config("press=snapkv")
    monkeypatch.setattr(engine, "answer", flaky)
    with caplog.at_level("WARNING"):
        first = run(cfg)
    assert first["run"]["n_failed"] == 1 and first["run"]["n_samples"] == 4
    assert "1 of 4 samples failed and are scored as empty answers" in caplog.text
    (predictions,) = list((tmp_path / "results").rglob(paths.PREDICTIONS_FILE))
    (failed,) = [r for r in read_jsonl(predictions) if r.get("error")]
    assert failed["error"] == "RuntimeError: CUDA out of memory (simulated)" and failed["score"] == 0.0

    monkeypatch.setattr(engine, "answer", real_answer)
    second = run(cfg)  # not skipped: the failed sample is retried, the others are kept
    assert second["run"]["n_failed"] == 0 and second["run"]["n_samples"] == 4
    records = read_jsonl(predictions)
    assert len(records) == 5 and records[-1]["id"] == failed["id"] and "error" not in records[-1]
    reference = run(make_config("press=snapkv", f"paths.results_root={tmp_path / 'clean'}"))
    assert second["scores"] == reference["scores"]


def test_a_job_interruption_stops_the_run_and_is_not_recorded_as_a_failed_sample(
    make_config, monkeypatch, tmp_path
):
    """submitit's SIGUSR2 handler raises UncompletedJobError (time limit hit, no requeue left)
    wherever the job is: the run must stop there, not score the sample in hand as empty and go
    on to write results.json with it."""
    from submitit.core.utils import UncompletedJobError

    real_answer = engine.answer
    calls = {"n": 0}

    def interrupted(model, tokenizer, press, prompt, lengths, kv_budget=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
        return real_answer(model, tokenizer, press, prompt, lengths, kv_budget)

    cfg = make_config("press=snapkv")
    monkeypatch.setattr(engine, "answer", interrupted)
    with pytest.raises(UncompletedJobError):
        run(cfg)
    (predictions,) = list((tmp_path / "results").rglob(paths.PREDICTIONS_FILE))
    assert [r.get("error") for r in read_jsonl(predictions)] == [None]  # the answer before it only
    assert not list((tmp_path / "results").rglob("results.json"))


@pytest.mark.subprocess
def test_a_model_that_cannot_be_found_says_to_use_a_local_path(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from spark_bench.models import ModelLoadError, load_model
    from tests.helpers import compose_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # for run.py below; this process read it at import:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # else it retries the hub
    spec = compose_config(["model=llama3.1-8b", "model.pretrained=no-such-org/no-such-model"]).model
    with pytest.raises(
        ModelLoadError, match=r"cannot load model.pretrained='no-such-org/no-such-model'"
    ) as err:
        load_model(spec)
    assert "set model.pretrained=/path/to/local/dir" in str(err.value)
    proc = run_py("model=llama3.1-8b", "model.pretrained=no-such-org/no-such-model", "logger=none",
                  f"hydra.run.dir={tmp_path / 'h'}", f"paths.results_root={tmp_path / 'r'}")  # fmt: skip
    assert proc.returncode == 2 and "model.pretrained=/path/to/local/dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unwritable_results_root_is_named(make_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        ConfigError, match=rf"cannot create the run directory {blocker}/ruler/.*set paths.results_root"
    ):
        run(make_config(f"paths.results_root={blocker}"))


def test_a_context_too_short_for_ruler_is_a_clear_error(make_config):
    with pytest.raises(
        ConfigError, match=r"dataset.context_length=100 cannot hold the prompt and 128 generated"
    ):
        run(make_config("dataset.context_length=100"))

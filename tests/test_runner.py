"""A tiny-model run through the runner and through run.py writes schema-1 results."""

from __future__ import annotations

import json
import sys

import pytest

from spark_bench import paths
from spark_bench.config import validate
from spark_bench.results import Prediction, Results, read_results
from spark_bench.runner import run
from tests.helpers import read_jsonl, run_py

RESULT_KEYS = Results.__annotations__
# "error" only on a failed sample, the other two only where a sweep job shared the prefill
PREDICTION_KEYS = set(Prediction.__annotations__) - {"error", "prefill_shared_by", "compress_s"}


def check_schema(results: dict) -> None:
    assert set(results) == set(RESULT_KEYS)
    assert results["schema"] == 1
    run_keys = {
        "model",
        "press",
        "dataset",
        "tasks",
        "compression_ratio",
        "kv_budget",
        "key_ratio",
        "value_ratio",
        "recovery",
        "token_window",
        "channel_window",
        "seed",
        "n_samples",
        "n_failed",
        "git_sha",
        "started_at",
        "finished_at",
        "config_hash",
        "config",
    }
    assert set(results["run"]) == run_keys
    assert set(results["memory"]) == {
        "kv_cache_bytes",
        "kv_cache_dense_bytes",
        "peak_gpu_bytes",
        "peak_rss_bytes",
    }
    assert set(results["timing"]) == {
        "prefill_s",
        "decode_s",
        "total_s",
        "shared_prefill_samples",
        "compress_s",
    }
    assert (
        results["timing"]["shared_prefill_samples"] == 0 and results["timing"]["compress_s"] is None
    )  # alone
    assert "average" in results["scores"]
    assert all(0 <= v <= 100 for v in results["scores"].values())


def test_tiny_run_writes_results_and_predictions(make_config):
    cfg = make_config("press=snapkv", "compression_ratio=0.5")
    results = run(cfg)
    out = paths.run_dir(cfg.paths.results_root, validate(cfg))
    on_disk = read_results(out / "results.json")
    assert on_disk == json.loads(json.dumps(results))
    check_schema(on_disk)
    run_block = on_disk["run"]
    assert (run_block["model"], run_block["press"], run_block["dataset"]) == ("tiny-llama", "snapkv", "ruler")
    assert run_block["n_samples"] == 4 and run_block["tasks"] == ["niah_single_1", "niah_single_2"]
    assert (
        run_block["compression_ratio"] == 0.5 and run_block["key_ratio"] is None
    )  # snapkv prunes no channels
    assert run_block["config"]["model"]["name"] == "tiny-llama"
    memory = on_disk["memory"]
    assert 0.45 < memory["kv_cache_bytes"] / memory["kv_cache_dense_bytes"] < 0.55
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [
        "niah_single_1/0",
        "niah_single_1/1",
        "niah_single_2/0",
        "niah_single_2/1",
    ]
    assert all(set(p) == PREDICTION_KEYS for p in predictions)
    # RULER fits the raw prompt into 512 - 128 tokens; the chat template adds its own few dozen
    assert all(300 < p["context_tokens"] < 512 - 64 for p in predictions)
    scores = on_disk["scores"]
    assert scores["average"] == round((scores["niah_single_1"] + scores["niah_single_2"]) / 2, 2)


def test_no_press_holds_the_dense_cache(make_config):
    memory = run(make_config("press=no_press"))["memory"]
    assert memory["kv_cache_bytes"] == memory["kv_cache_dense_bytes"] > 0


def test_kv_budget_keeps_that_many_tokens(make_config):
    cfg = make_config("press=streaming_llm", "compression_ratio=null", "kv_budget=100")
    results = run(cfg)
    assert results["run"]["kv_budget"] == 100 and results["run"]["compression_ratio"] is None
    out = paths.run_dir(cfg.paths.results_root, validate(cfg))
    # tiny-llama: 2 layers x (K, V) x 2 KV heads x head_dim 16 x 4 bytes per kept token
    per_token = 2 * 2 * 2 * 16 * 4
    for record in read_jsonl(out / "predictions.jsonl"):
        assert record["kv_cache_bytes"] == 100 * per_token
        assert record["kv_cache_dense_bytes"] == record["context_tokens"] * per_token


def test_a_rerun_after_a_crash_continues_and_ends_identical(make_config):
    cfg = make_config("press=snapkv", "max_samples=3")
    first = run(cfg)
    out = paths.run_dir(cfg.paths.results_root, validate(cfg))
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    # as if killed while writing the third record, before results.json
    (out / "predictions.jsonl").write_text("".join(lines[:2]) + lines[2][:25])
    (out / "results.json").unlink()
    second = run(cfg)
    strip = ("started_at", "finished_at")
    assert {k: v for k, v in second["run"].items() if k not in strip} == {
        k: v for k, v in first["run"].items() if k not in strip
    }
    assert second["scores"] == first["scores"]
    assert (out / "predictions.jsonl").read_text().count("\n") == len(lines) == 6


def test_different_configs_never_share_a_directory(make_config):
    a = make_config("compression_ratio=0.2")
    b = make_config("compression_ratio=0.3")
    c = make_config("compression_ratio=0.2", "seed=7")
    dirs = {paths.run_dir(x.paths.results_root, validate(x)) for x in (a, b, c)}
    assert len(dirs) == 3
    assert paths.run_dir(a.paths.results_root, validate(a)).parts[-4:-1] == (
        "ruler",
        "tiny-llama",
        "snap_spark",
    )


@pytest.mark.subprocess
def test_run_py_end_to_end_on_a_tiny_model(tmp_path):
    proc = run_py(
        "model=tiny-qwen3",
        "logger=none",
        "max_samples=1",
        "dataset.context_length=512",
        "max_new_tokens=3",
        f"paths.results_root={tmp_path}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = list(tmp_path.rglob("results.json"))
    check_schema(json.loads(results.read_text()))
    assert results.parent.parent.name == "snap_spark" and results.parent.parent.parent.name == "tiny-qwen3"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compression_ratio=1.5", "compression_ratio=1.5 is outside [0, 1)"),
        ("press=nosuchpress", "nosuchpress"),
    ],
)
def test_run_py_rejects_bad_input_before_the_model_loads(tmp_path, override, message):
    proc = run_py(
        "logger=none", override, f"paths.results_root={tmp_path}", f"hydra.run.dir={tmp_path / 'h'}"
    )
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    # "fast" without a clock: the config check fails before the run's first log line, so
    # neither the data nor the weights were loaded
    assert "samples from" not in proc.stdout + proc.stderr and "run ruler/" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("results.json"))


def test_progress_bar_on_a_terminal_only(make_config, capsys, monkeypatch):
    run(make_config("press=snapkv"))
    assert "samples:" not in capsys.readouterr().err  # logs of batch jobs stay clean
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run(make_config("press=snapkv", "seed=7"))
    bar = capsys.readouterr().err
    assert "samples: 100%" in bar and "4/4" in bar  # done / total, with tqdm's rate and ETA

"""results.json trees written as a finished run writes them, with chosen figures: the input
of the report, ``load_results`` and notebook tests."""

from __future__ import annotations

import copy
from pathlib import Path

from spark_bench.results import write_results

BASE_CONFIG = {
    "model": {"name": "llama3.1-8b", "loader": "hub", "pretrained": "meta-llama/Llama-3.1-8B-Instruct",
              "dtype": "bfloat16", "attn_implementation": "sdpa", "max_prompt_tokens": 127500},
    "dataset": {"name": "ruler", "tasks": ["niah_single_1", "niah_single_2"], "context_length": 4096,
                "num_samples": 100, "source": "generate"},
    "press": {"_target_": "spark_bench.presses.SnapSparkPress", "key_ratio": 0.8, "recovery": "mean",
              "window_size": 32, "press": {"_target_": "kvpress.SnapKVPress", "window_size": 64,
                                           "kernel_size": 5}},
    "compression_ratio": 0.5, "kv_budget": None, "key_ratio": 0.8, "value_ratio": 0.0,
    "recovery": "mean", "token_window": 64, "channel_window": 32, "compress_questions": True,
    "max_samples": None, "seed": 42, "max_new_tokens": None,
}  # fmt: skip
RUN_KNOBS = ("compression_ratio", "kv_budget", "key_ratio", "value_ratio", "recovery")


def write_run(root: Path, name: str, average: float, changes: dict | None = None, **extra) -> Path:
    """A results.json as the runner writes it, for the base config with ``changes`` (dotted
    keys reach into the nested blocks: ``dataset.context_length``)."""
    config = copy.deepcopy(BASE_CONFIG)
    for key, value in (changes or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    scores = {"niah_single_1": average, "niah_single_2": average, "average": average}
    results = {
        "schema": 1,
        "run": {
            "model": extra.get("model", "llama3.1-8b"),
            "press": extra.get("press", "snap_spark"),
            "dataset": "ruler",
            "tasks": config["dataset"]["tasks"],
            **{k: config[k] for k in RUN_KNOBS},
            "token_window": config["token_window"],
            "channel_window": config["channel_window"],
            "seed": config["seed"],
            "n_samples": 200,
            "n_failed": 0,
            "git_sha": "a" * 40,
            "started_at": "2026-12-01T10:00:00+00:00",
            "finished_at": extra.get("finished_at", "2026-12-01T11:00:00+00:00"),
            "config_hash": extra.get("config_hash", name),
            "config": config,
        },
        "scores": scores,
        "breakdown": {},
        "memory": {"kv_cache_bytes": 300, "kv_cache_dense_bytes": 1000, "peak_gpu_bytes": None,
                   "peak_rss_bytes": 1},
        "timing": {"prefill_s": 1.0, "decode_s": 1.0, "total_s": 2.0},
        "provenance": {"code_version": extra.get("code_version", "a" * 12), "versions": {"torch": "2.13.0"}},
    }  # fmt: skip
    path = root / name / "results.json"
    write_results(path, results)
    return path


def fake_results(
    root,
    press,
    key_ratio,
    scores,
    kv_bytes,
    budget=None,
    ratio=0.5,
    finished="2026-11-25T10:00:00+00:00",
    config=None,
    name=None,
):
    """A schema-1 results.json with chosen figures, as a finished run writes it."""
    run_block = {
        "model": "llama3.1-8b",
        "press": press,
        "dataset": "longbench",
        "tasks": list(scores),
        "compression_ratio": None if budget else ratio,
        "kv_budget": budget,
        "key_ratio": key_ratio,
        "value_ratio": 0.0 if key_ratio else None,
        "recovery": "mean" if key_ratio else None,
        "seed": 42,
        "n_samples": 10,
        "git_sha": None,
        "started_at": finished,
        "finished_at": finished,
        "config_hash": f"{press}{key_ratio}{budget}",
        "config": config or {"token_window": 64, "channel_window": 32, "compress_questions": True},
    }
    results = {
        "schema": 1,
        "run": run_block,
        "scores": {**scores, "average": round(sum(scores.values()) / len(scores), 2)},
        "breakdown": {},
        "memory": {
            "kv_cache_bytes": kv_bytes,
            "kv_cache_dense_bytes": 1000,
            "peak_gpu_bytes": None,
            "peak_rss_bytes": 1,
        },
        "timing": {"prefill_s": 1.0, "decode_s": 1.0, "total_s": 2.0},
    }
    path = root / (name or f"{press}_{key_ratio}_{budget}") / "results.json"
    path.parent.mkdir(parents=True)
    write_results(path, results)


def golden_tree(root):
    fake_results(root, "snapkv", None, {"qasper": 40.0, "trec": 60.0}, 500)
    fake_results(root, "snap_spark", 0.5, {"qasper": 39.5, "trec": 61.0}, 400)
    fake_results(root, "snap_spark", 0.8, {"qasper": 35.25, "trec": 58.0}, 330)
    fake_results(root, "snap_think", 0.5, {"qasper": 30.0, "trec": 50.0}, 500)
    fake_results(root, "snapkv", None, {"qasper": 20.0, "trec": 30.0}, 100, budget=128)

"""A results tree becomes a tidy frame and the paper-layout markdown table."""

from __future__ import annotations

import json
import shutil

from spark_bench.report import main, markdown_tables
from spark_bench.results import load_results
from spark_bench.runner import run


def test_results_tree_to_frame_and_table(make_config, tmp_path, capsys):
    run(make_config("press=snapkv", "max_samples=1"))
    run(make_config("press=snap_spark", "key_ratio=0.5", "max_samples=1"))
    root = tmp_path / "results"
    frame = load_results(root)
    assert len(frame) == 2 * 3  # two runs x (two tasks + average)
    assert set(frame["press"]) == {"snapkv", "snap_spark"}
    assert frame.loc[frame["press"] == "snapkv", "key_ratio"].isna().all()
    assert (frame.loc[frame["press"] == "snap_spark", "key_ratio"] == 0.5).all()
    assert {"kv_cache_bytes", "prefill_s", "task", "score", "config_hash"} <= set(frame.columns)

    table = markdown_tables(frame)
    assert "### tiny-llama · ruler · compression_ratio=0.1" in table
    assert "| press | niah_single_1 | niah_single_2 | average | KV / dense |" in table
    assert "| snap_spark (λ=0.5) |" in table and "| snapkv |" in table
    assert main([str(root)]) == 0 and capsys.readouterr().out == table


def test_the_newest_run_of_a_config_wins(make_config, tmp_path):
    run(make_config("press=snapkv", "max_samples=1"))
    root = tmp_path / "results"
    (original,) = list(root.rglob("results.json"))
    stale = json.loads(original.read_text())
    stale["run"]["finished_at"] = "2000-01-01T00:00:00+00:00"
    stale["scores"] = {k: 12.5 for k in stale["scores"]}
    copy = tmp_path / "results" / "old" / "results.json"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    copy.write_text(json.dumps(stale))
    frame = load_results(root)
    assert len(frame) == 3 and (frame["score"] != 12.5).all()

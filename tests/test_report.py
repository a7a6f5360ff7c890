"""A results tree becomes a tidy frame and the paper-layout markdown table."""

from __future__ import annotations

import json
import shutil

import pytest

from spark_bench.data import longbench
from spark_bench.report import PAPER_NOTE, main, markdown_tables
from spark_bench.results import load_results
from spark_bench.runner import run
from tests.helpers.results_trees import fake_results, golden_tree


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
    assert main([str(root), "--out", str(tmp_path / "report")]) == 0 and capsys.readouterr().out == table


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


GOLDEN_MARKDOWN = """### llama3.1-8b · longbench · compression_ratio=0.5

| press | qasper | trec | average | KV / dense |
|---|---|---|---|---|
| snap_spark (λ=0.5) | 39.50 | 61.00 | 50.25 | 0.40 |
| snapkv | 40.00 | 60.00 | 50.00 | 0.50 |
| snap_spark (λ=0.8) | 35.25 | 58.00 | 46.62 | 0.33 |
| snap_think (λ=0.5) | 30.00 | 50.00 | 40.00 | 0.50 |

### llama3.1-8b · longbench · kv_budget=128

| press | qasper | trec | average | KV / dense |
|---|---|---|---|---|
| snapkv | 20.00 | 30.00 | 25.00 | 0.10 |
"""


def test_report_markdown_equals_golden_and_writes_csv_and_plots(tmp_path, capsys):
    root = tmp_path / "results"
    golden_tree(root)
    out = tmp_path / "report"
    assert main([str(root), "--out", str(out)]) == 0
    assert capsys.readouterr().out == GOLDEN_MARKDOWN
    assert (out / "report.md").read_text() == GOLDEN_MARKDOWN
    import pandas as pd

    csv = pd.read_csv(out / "results.csv")
    assert len(csv) == 5 * 3 and {
        "press",
        "key_ratio",
        "task",
        "score",
        "kv_cache_bytes",
        "token_window",
        "channel_window",
    } <= set(csv.columns)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "score_vs_key_ratio_llama3.1-8b_longbench.png",
        "score_vs_kv_bytes_llama3.1-8b_longbench.png",
    ]
    assert all((out / p).read_bytes().startswith(b"\x89PNG") for p in pngs)


def test_default_output_is_under_the_results_root(tmp_path, capsys):
    root = tmp_path / "results"
    golden_tree(root)
    assert main([str(root)]) == 0
    assert (root / "report" / "report.md").is_file() and (root / "report" / "results.csv").is_file()
    assert len(load_results(root)) == 15  # the report folder adds no runs


def test_paper_table_and_relative_scores(tmp_path):
    from spark_bench.report import pareto_front
    from spark_bench.results import paper_table, relative_scores

    root = tmp_path / "results"
    golden_tree(root)
    frame = load_results(root)
    table = paper_table(frame)
    row = table.loc[("llama3.1-8b", "longbench", "compression_ratio=0.5", "", "snap_spark (λ=0.8)")]
    assert list(table.columns) == ["qasper", "trec", "average", "kv_ratio"]
    assert row["average"] == 46.62 and row["kv_ratio"] == 0.33
    relative = relative_scores(frame, baseline="snapkv")
    spark = relative[
        (relative["press"] == "snap_spark") & (relative["key_ratio"] == 0.5) & (relative["task"] == "trec")
    ]
    assert spark["baseline_score"].item() == 60.0 and round(spark["relative_score"].item(), 4) == round(
        61 / 60, 4
    )
    with pytest.raises(
        ValueError, match=r"baseline press 'no_press' has no run here; presses: \['snap_spark'"
    ):
        relative_scores(frame, baseline="no_press")
    averages = frame[(frame["task"] == "average") & (frame["kv_budget"].isna())]
    front = pareto_front(averages)
    assert list(front["kv_cache_bytes"]) == [330, 400]  # snapkv at 500 B is beaten by λ=0.5 at 400 B


def test_knobs_of_the_config_are_columns(tmp_path):
    root = tmp_path / "results"
    golden_tree(root)
    frame = load_results(root)
    assert (
        (frame["token_window"] == 64).all()
        and (frame["channel_window"] == 32).all()
        and frame["compress_questions"].all()
    )


def test_the_report_prints_the_papers_value_beside_cells_of_its_config(tmp_path):
    """The paper's LongBench averages at 128 tokens (Llama-3.1-8B-Instruct) appear beside a run of
    the same config in the paper's setting, and beside nothing else."""
    root = tmp_path / "results"
    sixteen = {task: 30.0 for task in longbench.HUB_TASKS}
    paper_setting = {"token_window": 64, "channel_window": 32, "compress_questions": True,
                     "max_samples": None, "max_new_tokens": None}  # fmt: skip
    fake_results(root, "snap_spark", 0.8, sixteen, 330, budget=128, config=paper_setting)
    fake_results(
        root, "snap_think", 0.8, {"qasper": 10.0, "trec": 12.0}, 500, budget=128, config=paper_setting
    )
    fake_results(
        root, "snap_spark", 0.5, sixteen, 400, budget=128, config={**paper_setting, "token_window": 32}
    )
    fake_results(root, "snapkv", None, sixteen, 500, budget=128, config={**paper_setting, "max_samples": 20})
    full = {**paper_setting, "token_window": None, "channel_window": None}
    fake_results(
        root, "no_press", None, {t: 45.0 for t in longbench.HUB_TASKS}, 1000, ratio=None, config=full
    )
    table = markdown_tables(load_results(root))
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    spark = "| snap_spark (λ=0.8, token_window=64)"  # the token window separates it from λ=0.5
    assert rows[spark].endswith("| 30.00 (31.16) | 0.33 |")
    assert "(" not in rows[spark].split("| 30.00 (31.16)")[0].replace("(λ=0.8, token_window=64)", "")
    assert rows["| no_press"].endswith("| 45.00 (44.27) | 1.00 |")
    think = "| snap_think (λ=0.8, token_window=64)"
    assert "(" not in rows[think].replace(
        "(λ=0.8, token_window=64)", ""
    )  # two tasks: not the paper's average
    other_window = "| snap_spark (λ=0.5, token_window=32)"
    assert "(" not in rows[other_window].replace("(λ=0.5, token_window=32)", "")
    assert "(" not in rows["| snapkv"]  # 20 samples per task
    assert table.count(PAPER_NOTE) == 2  # under the two blocks holding a published value


def test_published_numbers_name_valid_configs():
    from spark_bench.paper import published
    from tests.helpers import group_choices

    frame = published()
    assert len(frame) >= 6 and frame["source"].str.contains("2508.15212").all()
    assert set(frame["press"]) <= set(group_choices("press")) and set(frame["model"]) <= set(
        group_choices("model")
    )
    assert frame["score"].between(0, 100).all()

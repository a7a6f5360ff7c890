"""Runs that differ in any knob never share a row of a table, a point of a curve or a baseline,
and a table says when its runs were made by different code (issue: results you can trust)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest

from spark_bench.labels import label_runs
from spark_bench.report import SKIPPED_NOTE, SUPERSEDED_NOTE, main, markdown_tables, write_report
from spark_bench.results import load_results, paper_table, relative_scores
from tests.helpers.results_trees import write_run

# One knob at a time: (override, base value, the other value, the words a reader must see).
ONE_KNOB = [
    ({"dataset.context_length": 131072}, "context_length=4096", "context_length=131072"),
    ({"recovery": "none", "press.recovery": "none"}, "recovery=mean", "recovery=none"),
    ({"token_window": 32, "press.press.window_size": 32}, "token_window=64", "token_window=32"),
    ({"channel_window": 16, "press.window_size": 16}, "channel_window=32", "channel_window=16"),
    ({"seed": 7}, "seed=42", "seed=7"),
    ({"max_samples": 20}, "max_samples=null", "max_samples=20"),
    ({"max_new_tokens": 16}, "max_new_tokens=null", "max_new_tokens=16"),
    ({"value_ratio": 0.5}, "value_ratio=0", "value_ratio=0.5"),
    ({"compress_questions": False}, "compress_questions=true", "compress_questions=false"),
    ({"model.dtype": "float16"}, "model.dtype=bfloat16", "model.dtype=float16"),
    ({"press.press.kernel_size": 7}, "press.press.kernel_size=5", "press.press.kernel_size=7"),
    ({"dataset.tasks": ["niah_single_1", "niah_multikey_1"]}, "niah_single_2", "niah_multikey_1"),
]


@pytest.mark.parametrize(("changes", "shown", "other"), ONE_KNOB, ids=[next(iter(c[0])) for c in ONE_KNOB])
def test_runs_differing_in_one_knob_get_rows_or_blocks_of_their_own(tmp_path, changes, shown, other):
    write_run(tmp_path, "base", 95.0)
    write_run(tmp_path, "changed", 40.0, changes)
    frame = load_results(tmp_path)
    table = paper_table(frame)
    assert len(table) == 2 and table.index.is_unique
    assert sorted(table["average"]) == [40.0, 95.0]
    text = markdown_tables(frame)
    assert "| 95.00 |" in text and "| 40.00 |" in text
    assert shown in text and other in text


def test_another_checkpoint_is_another_model_row(tmp_path):
    write_run(tmp_path, "base", 95.0)
    write_run(tmp_path, "tuned", 40.0, {"model.pretrained": "org/tuned"}, model="llama3.1-8b@org--tuned")
    text = markdown_tables(load_results(tmp_path))
    assert "### llama3.1-8b · ruler" in text and "### llama3.1-8b@org--tuned · ruler" in text


def test_the_ruler_lengths_and_recovery_runs_of_the_issue_are_three_rows(tmp_path):
    """Three runs (RULER 4k, 128k, and 4k with recovery=none) printed as one `snap_spark (λ=0.8)
    | 95.00` row before: now each is a row of its own, labelled."""
    write_run(tmp_path, "4k", 95.0)
    write_run(tmp_path, "128k", 40.0, {"dataset.context_length": 131072})
    write_run(tmp_path, "none", 60.0, {"recovery": "none", "press.recovery": "none"})
    text = markdown_tables(load_results(tmp_path))
    assert "### llama3.1-8b · ruler · compression_ratio=0.5 · context_length=4096\n" in text
    assert "### llama3.1-8b · ruler · compression_ratio=0.5 · context_length=131072\n" in text
    rows = [line for line in text.splitlines() if line.startswith("| snap_spark")]
    assert sorted(rows) == [
        "| snap_spark (λ=0.8) | 40.00 | 40.00 | 40.00 | 0.30 |",
        "| snap_spark (λ=0.8, recovery=mean) | 95.00 | 95.00 | 95.00 | 0.30 |",
        "| snap_spark (λ=0.8, recovery=none) | 60.00 | 60.00 | 60.00 | 0.30 |",
    ]


def test_knobs_a_press_does_not_read_do_not_split_its_row(tmp_path):
    write_run(tmp_path, "spark", 95.0, {"token_window": 32, "press.press.window_size": 32})
    write_run(tmp_path, "spark64", 90.0)
    full = {k: None for k in ("token_window", "channel_window", "key_ratio", "recovery", "value_ratio")}
    write_run(tmp_path, "full", 99.0, {**full, "compression_ratio": None, "press": {}}, press="no_press")
    labelled = label_runs(load_results(tmp_path)).drop_duplicates("path").set_index("press")
    assert set(labelled["row"]) == {"no_press", "snap_spark (λ=0.8, token_window=32)",
                                    "snap_spark (λ=0.8, token_window=64)"}  # fmt: skip


def test_an_unlabelled_difference_still_gets_its_own_row(tmp_path):
    """A config difference outside every labelled field still separates rows, by config hash."""
    write_run(tmp_path, "one", 95.0, config_hash="aaaaaaaaaaaa")
    write_run(tmp_path, "two", 40.0, config_hash="bbbbbbbbbbbb")
    table = paper_table(load_results(tmp_path))
    assert len(table) == 2 and all("config " in row for row in table.index.get_level_values("row"))


def test_relative_scores_compare_within_one_setting(tmp_path):
    write_run(tmp_path, "spark4k", 90.0)
    write_run(tmp_path, "spark128k", 30.0, {"dataset.context_length": 131072})
    write_run(tmp_path, "snapkv4k", 100.0, press="snapkv")
    write_run(tmp_path, "snapkv128k", 60.0, {"dataset.context_length": 131072}, press="snapkv")
    relative = relative_scores(load_results(tmp_path), baseline="snapkv")
    spark = relative[(relative["press"] == "snap_spark") & (relative["task"] == "average")]
    assert sorted(spark["relative_score"]) == [0.5, 0.9]


def test_key_ratio_curves_draw_a_line_per_setting(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from spark_bench.report import plot_key_ratio_curves

    write_run(tmp_path, "a", 90.0)
    write_run(tmp_path, "b", 30.0, {"dataset.context_length": 131072})
    drawn = []
    with mock.patch("matplotlib.axes.Axes.plot", lambda ax, x, y, **kw: drawn.append((list(y), kw["label"]))):
        plot_key_ratio_curves(load_results(tmp_path), tmp_path / "curves.png", "t")
    assert sorted(drawn) == [
        ([30.0], "snap_spark · compression_ratio=0.5 · context_length=131072"),
        ([90.0], "snap_spark · compression_ratio=0.5 · context_length=4096"),
    ]


def test_the_report_draws_one_plot_pair_per_setting(tmp_path):
    write_run(tmp_path / "res", "a", 90.0)
    write_run(tmp_path / "res", "b", 30.0, {"dataset.context_length": 131072})
    written = write_report(load_results(tmp_path / "res"), tmp_path / "out")
    assert sorted(p.name for p in written if p.suffix == ".png") == [
        "score_vs_key_ratio_llama3.1-8b_ruler_context_length=131072.png",
        "score_vs_key_ratio_llama3.1-8b_ruler_context_length=4096.png",
        "score_vs_kv_bytes_llama3.1-8b_ruler_context_length=131072.png",
        "score_vs_kv_bytes_llama3.1-8b_ruler_context_length=4096.png",
    ]


def test_the_newest_result_of_a_config_is_shown_and_the_older_named(tmp_path):
    write_run(tmp_path, "run", 90.0, config_hash="samehash0000")
    old = write_run(tmp_path, "run/previous/20261101T000000Z", 10.0, config_hash="samehash0000",
                    finished_at="2026-11-01T00:00:00+00:00")  # fmt: skip
    frame = load_results(tmp_path)
    assert set(frame["score"]) == {90.0} and frame.attrs["superseded"] == [str(old.parent)]
    text = markdown_tables(frame)
    assert SUPERSEDED_NOTE in text and f"- `{old.parent}`" in text


def test_a_table_mixing_code_versions_says_so(tmp_path):
    write_run(tmp_path, "new", 90.0, code_version="b" * 12)
    write_run(tmp_path, "old", 40.0, {"recovery": "none", "press.recovery": "none"}, code_version="a" * 12)
    write_run(tmp_path, "other", 40.0, {"dataset.context_length": 8192}, code_version="b" * 12)
    text = markdown_tables(load_results(tmp_path))
    blocks = text.split("### ")[1:]
    mixed = [b for b in blocks if "Mixed code versions" in b]
    assert len(mixed) == 1 and "context_length=4096" in mixed[0]
    assert f"{'a' * 12} (1 run), {'b' * 12} (1 run)" in mixed[0] and "rerun=stale" in mixed[0]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_text(p.read_text()[:200]),  # half-written
        lambda p: p.write_text("{}"),  # no blocks
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema": 99})),  # another schema
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "scores": "high"})),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "memory": {}})),
        lambda p: (p.unlink(), p.mkdir()),  # a directory of that name
    ],
    ids=["half-written", "empty", "schema-99", "scores-not-numbers", "no-memory", "directory"],
)
def test_a_damaged_results_json_is_skipped_with_its_name(tmp_path, caplog, capsys, damage):
    write_run(tmp_path / "res", "good", 90.0)
    bad = write_run(tmp_path / "res", "bad", 10.0)
    damage(bad)
    with caplog.at_level(logging.WARNING, logger="spark_bench.results"):
        frame = load_results(tmp_path / "res")
    assert set(frame["score"]) == {90.0} and frame.attrs["skipped"] == [str(bad)]
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert main([str(tmp_path / "res"), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert SKIPPED_NOTE in report and str(bad) in report and "| 90.00 |" in report


def test_the_report_replaces_its_files_whole_or_not_at_all(tmp_path):
    write_run(tmp_path / "res", "good", 90.0)
    out = tmp_path / "out"
    assert main([str(tmp_path / "res"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def torn_csv(frame, path, **kwargs):
        Path(path).write_text("model,pre")
        raise OSError("disk full")

    write_run(tmp_path / "res", "more", 40.0, {"seed": 1})
    with mock.patch.object(pd.DataFrame, "to_csv", torn_csv), pytest.raises(OSError, match="disk full"):
        main([str(tmp_path / "res"), "--out", str(out)])
    assert (out / "results.csv").read_bytes() == before["results.csv"]
    after = sorted(p.name for p in out.iterdir())
    assert after == sorted(before)  # no temporary file left behind


def test_a_baseline_with_several_runs_in_a_cell_is_no_reference_there(tmp_path, caplog):
    write_run(tmp_path, "snapkv64", 100.0, press="snapkv")
    write_run(tmp_path, "snapkv32", 50.0, {"token_window": 32, "press.press.window_size": 32}, press="snapkv")
    write_run(tmp_path, "spark", 90.0)
    with caplog.at_level(logging.WARNING, logger="spark_bench.results"):
        relative = relative_scores(load_results(tmp_path), baseline="snapkv")
    assert relative["relative_score"].isna().all()  # neither 0.9 nor 1.8: there is no one baseline
    assert "several runs per table cell" in caplog.text

"""The benchmarks run in their quick mode and report every figure the issues name.

Timings are printed, never asserted (a timed test fails on a busy machine, not on a slow
harness); what does not depend on the clock is: the byte ratios, the peak memory of decoding,
identical answers on both sides of a comparison, and the plot.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow

TIMING_KEYS = (
    "decode_ratio_sparse_vs_dense",
    "harness_overhead_ratio",
    "spark_prefill_ratio_1k",
    "spark_prefill_ratio_4k",
    "spark_prefill_ratio_8k",
    "grouping_speedup",
    "shared_prefill_speedup",
    "shared_prefill_speedup_decoding_one_by_one",
    "shared_prefill_speedup_ceiling_free_batching",
    "shared_prefill_batch_step_cost",  # the embedded model decodes in float32: batched
)


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "perf.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_named_figure_is_reported_as_a_finite_positive_number(figures):
    for key in TIMING_KEYS:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["machine"]


def test_kv_bytes_meet_the_paper_targets(figures):
    assert figures["kv_ratio_snap_spark_0.8"] <= 0.70  # the paper's "over 30% less"
    assert figures["kv_ratio_snap_spark_0.5"] <= 0.85


def test_decoding_from_the_sparse_cache_peaks_below_the_dense_cache(figures):
    # allocations are deterministic, unlike timings: issue 5's memory target is asserted
    assert 0 < figures["decode_peak_bytes_sparse"] < figures["decode_peak_bytes_dense"]
    assert figures["decode_peak_ratio_sparse_vs_dense"] < 1.0


def test_both_sides_of_each_comparison_give_the_same_answers(figures):
    assert figures["harness_identical_predictions"] is True
    assert figures["grouping_identical_answers"] is True
    assert figures["shared_prefill_identical_predictions"] is True
    assert figures["shared_prefill_identical_predictions_decoding_one_by_one"] is True


def test_a_shared_prefill_holds_every_points_cache_and_one_dense_layer_more(figures):
    # allocations are deterministic: the shared side peaks above the largest point alone (it
    # holds six compressed caches), below six such points
    beyond = figures["shared_prefill_peak_ratio_beyond_weights"]
    assert 1.0 < beyond < figures["shared_prefill_points"]
    assert 1.0 < figures["shared_prefill_peak_ratio"] < beyond


def test_scaling_writes_a_table_per_press_and_length_and_a_plot(figures, tmp_path):
    rows = figures["scaling"]
    assert {r["press"] for r in rows} == {"no_press", "snapkv", "snap_spark λ=0.8"}
    by_press = {p: [r for r in rows if r["press"] == p] for p in ("no_press", "snapkv", "snap_spark λ=0.8")}
    for press_rows in by_press.values():
        assert [r["tokens"] for r in press_rows] == sorted(r["tokens"] for r in press_rows)
        kv = [r["kv_mb"] for r in press_rows]
        assert kv == sorted(kv) and kv[0] > 0  # bytes grow with the context
    for dense, snapkv, spark in zip(*by_press.values(), strict=True):
        assert spark["kv_mb"] < snapkv["kv_mb"] < dense["kv_mb"]
    with open(figures["scaling_plot"], "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"

"""The one place that decides where a run writes.

A run's directory is a pure function of its config (no timestamp), so starting the same
command again finds its own ``predictions.jsonl`` and continues, and two different configs
never share a directory: the trailing config hash covers everything the readable part omits.

    <results_root>/<dataset>/<model>/<press>/<knob tags>_<config hash>/
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from spark_bench import knobs

if TYPE_CHECKING:
    from spark_bench.config import RunSpec

PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
ARCHIVE_DIR = "previous"  # earlier outputs of a run directory, moved aside by rerun (never deleted)


def knob_tags(spec: RunSpec) -> str:
    """The press knobs that apply, short: ``cr0.1_kr0.5_recmean_tw32_cw32``."""
    return "_".join(knobs.tag(k, v) for k, v in spec.knobs.items() if v is not None)


def run_dir(results_root: str | Path, spec: RunSpec) -> Path:
    leaf = "_".join(part for part in (knob_tags(spec), spec.config_hash) if part)
    return Path(results_root) / spec.dataset / spec.model / spec.press / leaf


def run_name(spec: RunSpec) -> str:
    """A run's readable name for trackers: ``snap_spark-smollm2-135m-ruler-cr0.1_kr0.5_recmean_tw32_cw32``."""
    return "-".join(part for part in (spec.press, spec.model, spec.dataset, knob_tags(spec)) if part)

"""What the tests share: paths, the config composer, quick overrides, and ways to run the
project as a user does (``run.py``, the sweep status command). Test modules import from here,
never from one another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_bench.benchmarking import compose_config  # the one composer, shared with benchmarks/

__all__ = [
    "CONF",
    "FAST",
    "FAST_RULER",
    "ROOT",
    "cluster_unavailable",
    "compose_config",
    "group_choices",
    "prompt",
    "read_jsonl",
    "run_py",
    "status_cli",
]

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# Overrides that make a run take seconds: a random tiny model, short contexts, no tracking.
FAST = ["model=tiny-llama", "logger=none", "max_samples=2", "max_new_tokens=4"]
FAST_RULER = ["dataset.context_length=512"]  # generated RULER contexts only


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prompt(sample) -> str:
    """The whole prompt of a sample, before any chat template."""
    return sample.context + sample.question + sample.answer_prefix


def cluster_unavailable(reason: str) -> None:
    """Skip a slurm test where no cluster can start, with the reason; in CI (``$CI`` set), where
    ``make test`` installed the cluster, fail instead: a skipped test there hides a broken one."""
    message = f"no local SLURM cluster here: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_py(*overrides: str, cwd=ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *overrides], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def status_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spark_bench.sweep", "status", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

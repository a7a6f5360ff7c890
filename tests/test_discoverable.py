"""From the terminal alone: `python run.py --help` names the tool and describes every config
group, and `python -m spark_bench.tasks` lists what `dataset.tasks` can hold."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from spark_bench import tasks
from spark_bench.data import longbench, longbench_v2, ruler
from spark_bench.tasks.__main__ import main as tasks_main
from tests.helpers import ROOT, run_py

HYDRA_ONLY = {"hydra"}  # conf/hydra holds Hydra's own groups, shown as hydra/launcher=slurm


@pytest.mark.subprocess
def test_help_names_the_tool_and_describes_every_config_group():
    proc = run_py("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("spark_bench: KV-cache compression benchmarks")
    described = proc.stdout.split("== Config groups")[1].split("Options of each group")[0]
    groups = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name not in HYDRA_ONLY)
    for group in groups:
        assert re.search(rf"^\+?{group}\s{{2,}}\S", described, re.MULTILINE), f"group {group} not described"
    assert "hydra/launcher=slurm" in described
    assert (
        "python -m spark_bench.tasks" in proc.stdout and "python -m spark_bench.sweep status" in proc.stdout
    )


@pytest.mark.parametrize(
    ("benchmark", "task_names"),
    [("ruler", ruler.TASKS), ("longbench", tuple(longbench.TASKS)), ("longbench_v2", longbench_v2.TASKS)],
)
def test_tasks_lists_every_task_of_a_benchmark_with_its_length_and_metric(benchmark, task_names, capsys):
    assert tasks_main([benchmark]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == list(task_names)
    for row, task in zip(rows, task_names, strict=True):
        assert row.split()[1] == str(tasks.get(benchmark).max_new_tokens(task))
    if benchmark == "longbench":
        (trec,) = [row for row in rows if row.startswith("trec ")]
        assert trec.split()[2:] == ["no", "classification"]  # no chat template, its official metric


@pytest.mark.subprocess
def test_tasks_of_an_unknown_benchmark_is_one_line():
    command = [sys.executable, "-m", "spark_bench.tasks", "lngbench"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "'lngbench'" in proc.stderr and "longbench, longbench_v2, ruler" in proc.stderr

"""The README's "Extending" examples, run as written: a new benchmark (module + dataset yaml)
and a new press (one yaml) work end to end with nothing else touched."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from kvpress import KnormPress

from spark_bench import tasks
from spark_bench.config import validate
from spark_bench.presses import build_press
from spark_bench.runner import run
from spark_bench.tasks.__main__ import table
from tests.helpers import ROOT, compose_config, read_jsonl

SECTION = "## Extending"
# A code block of the section whose first line names the file it is: ```lang\n# <path>...
BLOCK = re.compile(r"```(?:python|yaml)\n# (?P<path>\S+?)(?::[^\n]*)?\n(?P<body>.*?)```", re.DOTALL)


def readme_files() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return {m["path"]: m["body"] for m in BLOCK.finditer(section)}


@pytest.fixture
def extended(tmp_path, monkeypatch):
    """The README's files in a scratch tree: the benchmark module registered as the registry
    would find it in src/spark_bench/tasks/, the yamls on Hydra's search path."""
    files = readme_files()
    assert set(files) == {
        "src/spark_bench/tasks/passkey.py",
        "conf/dataset/passkey.yaml",
        "conf/press/knorm.yaml",
    }
    for path, body in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    spec = importlib.util.spec_from_file_location("passkey", tmp_path / "src/spark_bench/tasks/passkey.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(tasks.BENCHMARKS, "passkey", module.BENCHMARK)
    return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


def test_the_readme_benchmark_runs_end_to_end(extended, tmp_path):
    results_root = tmp_path / "results"
    cfg = compose_config(
        [
            *extended,
            "dataset=passkey",
            "dataset.filler_repeats=4",
            "model=tiny-llama",
            "press=snap_spark",
            "max_samples=2",
            "logger=none",
            f"paths.results_root={results_root}",
        ]
    )
    results = run(cfg)
    assert set(results["scores"]) == {"passkey", "average"}
    assert results["run"]["dataset"] == "passkey" and results["run"]["n_samples"] == 2
    (path,) = results_root.rglob("results.json")
    assert json.loads(path.read_text())["scores"] == results["scores"]
    records = read_jsonl(path.parent / "predictions.jsonl")
    assert [r["id"] for r in records] == ["passkey/0", "passkey/1"]
    assert all(len(r["answers"][0]) == 5 for r in records)
    assert "passkey  16" in table("passkey")


def test_the_readme_benchmark_checks_its_tasks(extended):
    with pytest.raises(ValueError, match=r"passkey task 'nope' is not one of \['passkey'\]"):
        tasks.get("passkey").max_new_tokens("nope")


def test_the_readme_press_is_one_yaml(extended):
    cfg = compose_config([*extended, "press=knorm", "compression_ratio=0.3", "key_ratio=0.8"])
    spec = validate(cfg)
    assert spec.knobs["compression_ratio"] == 0.3 and spec.knobs["key_ratio"] is None
    press = build_press(cfg.press)
    assert isinstance(press, KnormPress) and press.compression_ratio == 0.3

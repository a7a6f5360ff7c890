"""LongBench from the hub copy the SparK paper reads (Xnhyacinth/LongBench, parquet, no loading
script), tested on a local folder laid out like that repository and read through the same
``datasets`` call; its samples equal those of the official files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spark_bench import models
from spark_bench.config import ConfigError, validate
from spark_bench.data import longbench, longbench_v2
from spark_bench.data.hub import DataSourceError
from spark_bench.data.ruler import sources as ruler_sources
from spark_bench.runner import run
from tests.helpers import ROOT, compose_config, read_jsonl

# Where the kvpress script that built the hub copy cuts each official prompt (the text its
# "question" column starts with) and the answer prefix it splits off (kvpress
# evaluation/benchmarks/longbench/create_huggingface_dataset.py).
QUESTION_STARTS = {
    "narrativeqa": "Question: {input}",
    "qasper": "Question: {input}",
    "multifieldqa_en": "Question: {input}",
    "hotpotqa": "Question: {input}",
    "2wikimqa": "Question: {input}",
    "musique": "Question: {input}",
    "gov_report": "Now, write a one-page summary of the report.",
    "qmsum": "Query: {input}",
    "multi_news": "Now, write a one-page summary of all the news.",
    "trec": "{input}",
    "triviaqa": "{input}",
    "samsum": "{input}",
    "passage_count": "Please enter the final count",
    "passage_retrieval_en": "{input}",
    "lcc": "Next line of code",
    "repobench-p": "{input}",
}
ANSWER_PREFIXES = {
    "gov_report": "Summary:",
    "multi_news": "Summary:",
    "samsum": "Summary:",
    "trec": "Type:",
    "passage_count": "The final answer is: ",
    "passage_retrieval_en": "The answer is: ",
    "lcc": "Next line of code:\n",
    "repobench-p": "Next line of code:\n",
}
# Official inputs of the few-shot tasks end with the answer cue (LongBench data.zip).
INPUT_ENDINGS = {"trec": "\nType:", "triviaqa": "\nAnswer:", "samsum": "\nSummary:"}


def official_record(task: str, i: int) -> dict:
    """A record with the official fields; the context ends in a newline, as code contexts do."""
    return {
        "input": "" if task == "lcc" else f"Question {i} of {task}?{INPUT_ENDINGS.get(task, '')}",
        "context": f"Document {i} of {task}: " + " ".join(f"w{j}" for j in range(40)) + "\n",
        "answers": [f"answer {i}"],
        "length": 4100 * i,
        "dataset": task,
        "language": "en",
        "all_classes": ["Entity", "Location"] if task == "trec" else None,
        "_id": f"{task}-{i}",
    }


def hub_row(task: str, record: dict) -> dict:
    """The row the kvpress script makes of an official record: the prompt cut in three."""
    template = longbench.task(task).prompt
    prompt = template.format(**record)
    context = template[: template.index(QUESTION_STARTS[task])].format(**record)
    prefix = ANSWER_PREFIXES.get(task, "Answer:")
    assert prompt.startswith(context) and prompt.endswith(prefix)
    row = {k: v for k, v in record.items() if k not in ("input", "context")}
    return {
        **row,
        "context": context,
        "question": prompt[len(context) : len(prompt) - len(prefix)],
        "answer_prefix": prefix,
        "task": task,
        "max_new_tokens": longbench.task(task).max_new_tokens + 20,
    }


def write_both_layouts(root: Path, tasks, n: int = 3, longbench_e: bool = False) -> tuple[Path, Path]:
    """The official files (data.zip layout) and a folder laid out like the hub repository:
    ``<config>/test-00000-of-00001.parquet`` and a README whose YAML lists the configs."""
    official, hub = root / "official", root / "hub"
    official.mkdir(parents=True)
    configs = []
    for task in tasks:
        config = longbench.config_name(task, longbench_e)
        records = [official_record(task, i) for i in range(n)]
        (official / f"{config}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (hub / config).mkdir(parents=True)
        pd.DataFrame([hub_row(task, r) for r in records]).to_parquet(
            hub / config / "test-00000-of-00001.parquet"
        )
        configs.append(
            f"- config_name: {config}\n  data_files:\n  - split: test\n    path: {config}/test-*\n"
        )
    (hub / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")
    return official, hub


@pytest.mark.parametrize("longbench_e", [False, True])
def test_the_hub_copy_gives_the_samples_of_the_official_files(tmp_path, longbench_e):
    tasks = longbench.LONGBENCH_E_TASKS if longbench_e else longbench.HUB_TASKS
    official, hub = write_both_layouts(tmp_path, tasks, longbench_e=longbench_e)
    for task in tasks:
        from_files = longbench.to_samples(
            task, longbench.load_records(task, str(official), longbench_e), longbench_e
        )
        from_hub = longbench.to_samples(
            task, longbench.load_records(task, str(hub), longbench_e), longbench_e
        )
        assert from_hub == from_files, task
        record = official_record(task, 0)
        assert from_hub[0].context + from_hub[0].question == longbench.build_prompt(task, record)
        assert from_hub[0].context == longbench.split_prompt(task, record)[0]  # cut after the document


def test_a_record_that_is_not_the_official_prompt_is_refused():
    row = hub_row("hotpotqa", official_record("hotpotqa", 0))
    row["context"] = "Some other instruction.\n\n" + row["context"]
    with pytest.raises(ValueError, match="record 'hotpotqa-0': its prompt is not the official one"):
        longbench.to_samples("hotpotqa", [row])


def test_the_hub_path_calls_datasets_with_the_repository_and_task_folder(monkeypatch, tmp_path):
    _, hub = write_both_layouts(tmp_path, ["qasper"])
    import datasets

    calls = []
    real = datasets.load_dataset

    def spy(path, **kwargs):
        calls.append((path, kwargs))
        return real(str(hub), **kwargs)  # the hub repository, served from the local copy

    monkeypatch.setattr(datasets, "load_dataset", spy)
    records = longbench.load_records("qasper", None)
    assert calls == [("Xnhyacinth/LongBench", {"data_dir": "qasper", "split": "test"})]
    assert [r["_id"] for r in records] == ["qasper-0", "qasper-1", "qasper-2"]


def test_a_run_reads_a_hub_download_end_to_end(make_config, tmp_path):
    _, hub = write_both_layouts(tmp_path, ["hotpotqa", "trec"])
    results = run(
        make_config("dataset=longbench", f"dataset.data_dir={hub}", "dataset.tasks=[hotpotqa,trec]")
    )
    assert set(results["scores"]) == {"hotpotqa", "trec", "average"}
    (predictions,) = (tmp_path / "results").rglob("predictions.jsonl")
    assert [r["id"] for r in read_jsonl(predictions)] == ["hotpotqa/hotpotqa-0", "hotpotqa/hotpotqa-1",
                                                          "trec/trec-0", "trec/trec-1"]  # fmt: skip


def test_an_unreachable_hub_fails_before_the_model_loads(make_config, monkeypatch):
    import datasets

    def offline(path, **kwargs):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    def no_model(spec):
        raise AssertionError("the model loaded before the data was read")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(models, "load_model", no_model)
    models._REUSABLE.clear()
    with pytest.raises(ConfigError) as err:
        run(make_config("dataset=longbench", "dataset.tasks=[qasper]"))
    message = str(err.value)
    assert message.startswith(
        "cannot read LongBench task 'qasper' from dataset.hub_id=Xnhyacinth/LongBench: ConnectionError: "
    )
    assert "hf download Xnhyacinth/LongBench --repo-type dataset --local-dir <dir>" in message
    assert "dataset.data_dir=<dir>" in message and "\n" not in message


@pytest.mark.subprocess
def test_run_py_says_an_unreachable_hub_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # no network call
    proc = subprocess.run(
        [sys.executable, "run.py", "dataset=longbench", "dataset.hub_id=no-such-org/LongBench",
         "model=tiny-llama", "logger=none", f"paths.results_root={tmp_path / 'res'}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("spark_bench: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "dataset.hub_id=no-such-org/LongBench" in errors[0] and "dataset.data_dir=<dir>" in errors[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.hub_id=THUDM/LongBench"], "dataset.hub_id=THUDM/LongBench is a loading-script dataset"),
        (["dataset.tasks=[hotpotqa,dureader]"], "holds the 16 English tasks only, not ['dureader']"),
        (["dataset.longbench_e=true"], "LongBench-E has no set for ['narrativeqa', 'musique', 'qmsum']"),
    ],
)
def test_hub_sources_that_cannot_serve_the_run_fail_at_the_config_check(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["dataset=longbench", *overrides]))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (
            lambda: longbench_v2.load_records(None),
            "cannot read LongBench-v2 from the hub (THUDM/LongBench-v2)",
        ),
        (
            lambda: ruler_sources.from_hub(4096),
            "cannot read RULER at dataset.context_length=4096 from dataset.source=hub (simonjegou/ruler)",
        ),
    ],
)
def test_every_hub_source_says_an_unreachable_hub_in_one_line(monkeypatch, load, expected):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError) as err:
        load()
    assert str(err.value).startswith(expected + ": ConnectionError: Couldn't reach the Hub")
    assert "hf download" in str(err.value) and "\n" not in str(err.value)

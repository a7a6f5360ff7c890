"""LongBench-v2: the official 0-shot prompt, answer extraction, scores and breakdown, and runs
from local files in the official format."""

from __future__ import annotations

import json

import pytest

from spark_bench import tasks
from spark_bench.config import ConfigError, validate
from spark_bench.data import longbench_v2
from spark_bench.metrics.longbench_v2 import extract_answer
from spark_bench.runner import run
from tests.helpers import compose_config, read_jsonl
from tests.helpers.longbench_files import V2_RECORD as RECORD
from tests.helpers.longbench_files import write_longbench, write_longbench_v2

# prompts/0shot.txt filled by hand: fields stripped, no trailing newline.
GOLDEN = (
    "Please read the following text and answer the question below.\n\n<text>\n"
    "The annual report says Globex grew 40%.\n</text>\n\n"
    "What is the correct answer to this question: Which company grew fastest?\nChoices:\n"
    "(A) Acme\n(B) Globex\n(C) Initech\n(D) Umbrella\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)


def test_prompt_is_the_official_zero_shot_template():
    assert tasks.get("longbench_v2").build_prompt("single_document_qa", RECORD) == GOLDEN
    head, tail = longbench_v2.split_prompt(RECORD)
    assert head + tail == GOLDEN and tail.startswith("What is the correct answer to this question:")
    assert tasks.get("longbench_v2").max_new_tokens("code_repository") == 128
    assert tasks.get("longbench_v2").uses_chat_template("long_structured_data")
    with pytest.raises(ValueError, match=r"'nope' is not one of \['single_document_qa'"):
        tasks.get("longbench_v2").build_prompt("nope", RECORD)


def test_a_document_holding_a_marker_is_replaced_as_pred_py_chains_it():
    record = {**RECORD, "context": "see $Q$ here"}
    prompt = tasks.get("longbench_v2").build_prompt("single_document_qa", record)
    assert "see Which company grew fastest? here" in prompt  # str.replace order of pred.py
    head, tail = longbench_v2.split_prompt(record)
    assert head + tail == prompt and tail.startswith("What is the correct answer")


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("The correct answer is (B).", "B"),
        ("**The correct answer is (C)**", "C"),  # markdown stars dropped first
        ("The correct answer is D because ...", "D"),  # bare letter, second pattern
        ("The correct answer is (E)", None),  # only A-D
        ("the correct answer is (A)", None),  # case-sensitive, as pred.py
        ("I think (A).", None),
        ("The correct answer is A, not The correct answer is (B)", "B"),  # bracketed form wins
        ("The correct answer is *(*A*)*", "A"),
    ],
)
def test_answer_extraction_follows_pred_py(response, letter):
    assert extract_answer(response) == letter


def test_score_is_accuracy_rounded_to_one_decimal_as_result_py():
    preds = ["The correct answer is (A)", "The correct answer is (B)", "no idea"]
    assert tasks.get("longbench_v2").score("single_document_qa", preds, [["A"], ["C"], ["A"]]) == 33.3
    assert tasks.get("longbench_v2").score("x", ["  The correct answer is (D)  "], [["D"]]) == 100.0


def test_summary_average_is_overall_accuracy_and_breakdown_by_difficulty_and_length():
    rows = [
        tasks.Row("single_document_qa", "The correct answer is (A)", ["A"], labels=("easy", "short")),
        tasks.Row("single_document_qa", "The correct answer is (A)", ["B"], labels=("hard", "long")),
        tasks.Row("single_document_qa", "The correct answer is (C)", ["C"], labels=("hard", "long")),
        tasks.Row("code_repository", "The correct answer is (D)", ["D"], labels=("hard", "short")),
    ]
    scores, breakdown = tasks.get("longbench_v2").summarize(["single_document_qa", "code_repository"], rows)
    # "average" is result.py's Overall: 3 of 4 questions, not the mean of 66.7 and 100
    assert scores == {"single_document_qa": 66.7, "code_repository": 100.0, "average": 75.0}
    assert breakdown == {"all": {"easy": 100.0, "hard": 66.7, "short": 100.0, "medium": None, "long": 50.0}}


def test_local_release_runs_end_to_end(make_config, tmp_path):
    data = tmp_path / "v2"
    data.mkdir()
    write_longbench_v2(data)
    cfg = make_config(
        "dataset=longbench_v2",
        f"dataset.data_dir={data}",
        "dataset.tasks=[single_document_qa,code_repository]",
    )
    results = run(cfg)
    assert results["run"]["n_samples"] == 4
    assert set(results["scores"]) == {"single_document_qa", "code_repository", "average"}
    assert set(results["breakdown"]["all"]) == {"easy", "hard", "short", "medium", "long"}
    assert results["breakdown"]["all"]["long"] is None  # no long question among the 4
    (predictions,) = list((tmp_path / "results").rglob("predictions.jsonl"))
    assert [r["id"] for r in read_jsonl(predictions)] == [
        "single_document_qa/id0-0",
        "single_document_qa/id0-1",
        "code_repository/id4-0",
        "code_repository/id4-1",
    ]


def test_jsonl_copies_and_bad_data_dirs(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps(RECORD) + "\n" + json.dumps({"_id": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"data\.jsonl:2 lacks the official field\(s\) \['domain'"):
        longbench_v2.load_records(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"holds none of \['data.json', 'data.jsonl', 'data.parquet'\]"):
        validate(compose_config(["dataset=longbench_v2", f"dataset.data_dir={empty}"]))
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['qa'\] for longbench_v2"):
        validate(compose_config(["dataset=longbench_v2", "dataset.tasks=[qa]"]))


@pytest.mark.subprocess
@pytest.mark.parametrize("benchmark", ["longbench", "longbench_v2", "ruler"])
def test_run_py_runs_each_benchmark_from_local_files(benchmark, tmp_path):
    """`python run.py dataset=<benchmark> dataset.data_dir=<fixtures> model=tiny-llama`."""
    from tests.helpers import run_py

    data = tmp_path / "data"
    data.mkdir()
    if benchmark == "longbench":
        write_longbench(data, "qasper", 2)
        extra = [f"dataset.data_dir={data}", "dataset.tasks=[qasper]"]
    elif benchmark == "longbench_v2":
        write_longbench_v2(data)
        extra = [f"dataset.data_dir={data}", "dataset.tasks=[multi_document_qa]"]
    else:  # the default RULER source: generated, no files, no download
        extra = ["dataset.context_length=1024", "dataset.tasks=[vt,qa_2]"]
    proc = run_py(
        f"dataset={benchmark}",
        "model=tiny-llama",
        "logger=none",
        "max_samples=2",
        "max_new_tokens=3",
        *extra,
        f"paths.results_root={tmp_path / 'res'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = list((tmp_path / "res").rglob("results.json"))
    results = json.loads(path.read_text())
    assert results["run"]["dataset"] == benchmark and results["run"]["n_samples"] == (
        4 if benchmark == "ruler" else 2
    )
    assert "average" in results["scores"] and len(results["scores"]) == (3 if benchmark == "ruler" else 2)


def test_a_task_with_no_records_fails_before_anything_runs(make_config, tmp_path):
    data = tmp_path / "v2"
    data.mkdir()
    (data / "data.json").write_text(json.dumps([RECORD]))  # one Single-Document QA question only
    cfg = make_config("dataset=longbench_v2", f"dataset.data_dir={data}",
                      "dataset.tasks=[single_document_qa,code_repository]")  # fmt: skip
    with pytest.raises(ConfigError, match=r"task\(s\) \['code_repository'\] hold no samples in .*v2"):
        run(cfg)
    assert not list((tmp_path / "results").rglob("predictions.jsonl"))

"""LongBench from local files in the official format, through the runner."""

from __future__ import annotations

import json

import pytest

from spark_bench.config import ConfigError, validate
from spark_bench.data import longbench
from spark_bench.data.truncation import truncate_middle
from spark_bench.models import embedded_tokenizer
from spark_bench.runner import run
from tests.helpers import read_jsonl
from tests.helpers.longbench_files import TREC_CLASSES, write_longbench


def test_local_files_run_end_to_end(make_config, tmp_path):
    data = tmp_path / "longbench"
    data.mkdir()
    for task in ("hotpotqa", "trec"):
        write_longbench(data, task, 3)
    cfg = make_config("dataset=longbench", f"dataset.data_dir={data}", "dataset.tasks=[hotpotqa,trec]")
    results = run(cfg)
    assert results["run"]["dataset"] == "longbench" and results["run"]["n_samples"] == 4  # max_samples=2
    assert set(results["scores"]) == {"hotpotqa", "trec", "average"}
    (predictions,) = list((tmp_path / "results").rglob("predictions.jsonl"))
    ids = [r["id"] for r in read_jsonl(predictions)]
    assert ids == ["hotpotqa/id0", "hotpotqa/id1", "trec/id0", "trec/id1"]


def test_samples_carry_the_official_prompt_and_classes(tmp_path):
    write_longbench(tmp_path, "trec", 2)
    records = longbench.load_records("trec", str(tmp_path))
    (sample, _) = longbench.to_samples("trec", records)
    assert sample.context + sample.question == longbench.build_prompt("trec", records[0])
    assert (
        sample.all_classes == tuple(TREC_CLASSES) and sample.max_new_tokens == 64 and not sample.chat_template
    )


def test_bad_data_dirs_name_the_problem(tmp_path):
    from tests.helpers import compose_config

    with pytest.raises(ConfigError, match=r"dataset\.data_dir=/nonexistent/dir is not a directory"):
        validate(compose_config(["dataset=longbench", "dataset.data_dir=/nonexistent/dir"]))
    write_longbench(tmp_path, "hotpotqa", 1)
    with pytest.raises(ConfigError, match=r"lacks \['qasper.jsonl'\]"):
        validate(
            compose_config(
                ["dataset=longbench", f"dataset.data_dir={tmp_path}", "dataset.tasks=[hotpotqa,qasper]"]
            )
        )
    (tmp_path / "qasper.jsonl").write_text(
        '{"input": "q", "context": "c", "answers": ["a"]}\n{"input": "q"}\n'
    )
    with pytest.raises(
        ValueError, match=r"qasper.jsonl:2 lacks the official field\(s\) \['context', 'answers'\]"
    ):
        longbench.load_records("qasper", str(tmp_path))


def test_middle_truncation_keeps_both_ends_and_the_question():
    tokenizer = embedded_tokenizer()
    record = {
        "input": "Which word comes last?",
        "context": " ".join(f"w{i}" for i in range(2000)),
        "answers": ["w"],
    }
    (sample,) = longbench.to_samples("hotpotqa", [record])
    cut, truncated = truncate_middle(tokenizer, sample, 500)
    assert truncated and cut.question == sample.question
    assert cut.context.startswith(sample.context[:200]) and cut.context.endswith(sample.context[-200:])
    total = len(tokenizer.encode(cut.context + cut.question, add_special_tokens=False))
    assert 490 <= total <= 505  # a token or two may merge across the cut
    same, truncated = truncate_middle(tokenizer, sample, 100_000)
    assert same is sample and not truncated


def test_runner_truncates_long_prompts_and_says_so(make_config, tmp_path, caplog):
    data = tmp_path / "lb"
    data.mkdir()
    write_longbench(data, "hotpotqa", 1, words=2000)
    cfg = make_config(
        "dataset=longbench",
        f"dataset.data_dir={data}",
        "dataset.tasks=[hotpotqa]",
        "model.max_prompt_tokens=600",
    )
    with caplog.at_level("WARNING"):
        run(cfg)
    assert "1 of 1 prompts exceed model.max_prompt_tokens=600" in caplog.text
    (predictions,) = list((tmp_path / "results").rglob("predictions.jsonl"))
    assert read_jsonl(predictions)[0]["context_tokens"] < 700  # chat template included


def write_official_e(directory, task: str, lengths: list[int]) -> None:
    """A LongBench-E file (<task>_e.jsonl): the official fields, lengths spread over the buckets."""
    lines = [
        json.dumps(
            {
                "input": f"Q{i}?",
                "context": "some words " * 50,
                "answers": [f"answer {i}"],
                "length": length,
                "all_classes": None,
                "_id": f"e{i}",
            }
        )
        for i, length in enumerate(lengths)
    ]
    (directory / f"{task}_e.jsonl").write_text("\n".join(lines) + "\n")


def test_longbench_e_scores_each_length_bucket(make_config, tmp_path):
    data = tmp_path / "lbe"
    data.mkdir()
    write_official_e(data, "hotpotqa", [3999, 4000, 12000])
    cfg = make_config(
        "dataset=longbench",
        f"dataset.data_dir={data}",
        "dataset.tasks=[hotpotqa]",
        "dataset.longbench_e=true",
        "max_samples=3",
    )
    results = run(cfg)
    assert set(results["breakdown"]) == {"hotpotqa"}
    assert set(results["breakdown"]["hotpotqa"]) == {"0-4k", "4-8k", "8k+"}
    (predictions,) = list((tmp_path / "results").rglob("predictions.jsonl"))
    per_sample = [r["score"] for r in read_jsonl(predictions)]
    assert [results["breakdown"]["hotpotqa"][b] for b in ("0-4k", "4-8k", "8k+")] == per_sample


def test_length_buckets_are_eval_py_scorer_e():
    assert [longbench.length_bucket(n) for n in (0, 3999, 4000, 7999, 8000, 10**6)] == [
        "0-4k",
        "0-4k",
        "4-8k",
        "4-8k",
        "8k+",
        "8k+",
    ]


def test_kvpress_copy_of_the_paper_gives_the_official_prompt():
    """Xnhyacinth/LongBench rows (kvpress's cut of the official prompt) join to the official prompt."""
    raw = {"input": "Who wrote it?", "context": "Passage 1: a text.", "answers": ["Ann"], "_id": "k0"}
    official = longbench.build_prompt("hotpotqa", raw)
    cut = official.index("Question:")
    kvpress_row = {
        "context": official[:cut],
        "question": "Question: Who wrote it?\n",
        "answer_prefix": "Answer:",
        "answers": ["Ann"],
        "all_classes": None,
        "_id": "k0",
        "length": 4,
    }
    (sample,) = longbench.to_samples("hotpotqa", [kvpress_row])
    assert sample.context + sample.question + sample.answer_prefix == official


def test_question_fed_after_compression_appears_once(make_config, tmp_path):
    data = tmp_path / "lbq"
    data.mkdir()
    write_longbench(data, "hotpotqa", 2)
    cfg = make_config(
        "dataset=longbench",
        f"dataset.data_dir={data}",
        "dataset.tasks=[hotpotqa]",
        "compress_questions=false",
    )
    results = run(cfg)
    assert results["run"]["n_samples"] == 2 and "hotpotqa" in results["scores"]
    (predictions,) = list((tmp_path / "results").rglob("predictions.jsonl"))
    records = read_jsonl(predictions)
    from spark_bench import engine

    tokenizer = embedded_tokenizer()
    raw = [json.loads(line) for line in (data / "hotpotqa.jsonl").read_text().splitlines()]
    for record, sample in zip(records, longbench.to_samples("hotpotqa", raw), strict=False):
        prefill, (query,) = engine.build_prompt_text(tokenizer, [sample], compress_questions=False)
        assert (
            sample.question.strip() not in prefill and (prefill + query).count(sample.question.strip()) == 1
        )
        # what was compressed is the context alone
        assert record["context_tokens"] == engine.encode(tokenizer, [sample], False).prefill_ids.shape[1]


def test_truncation_boundary_is_exactly_max_prompt_tokens():
    tokenizer = embedded_tokenizer()
    record = {"input": "Q?", "context": " ".join(f"w{i}" for i in range(300)), "answers": ["w"]}
    (sample,) = longbench.to_samples("hotpotqa", [record])
    total = len(tokenizer.encode(sample.context, add_special_tokens=False)) + len(
        tokenizer.encode(sample.question, add_special_tokens=False)
    )
    same, cut = truncate_middle(tokenizer, sample, total)
    assert same is sample and not cut  # a prompt of exactly the maximum stays whole
    shorter, cut = truncate_middle(tokenizer, sample, total - 1)
    assert cut and shorter.question == sample.question
    kept = len(tokenizer.encode(shorter.context, add_special_tokens=False)) + len(
        tokenizer.encode(shorter.question, add_special_tokens=False)
    )
    assert total - 3 <= kept <= total - 1  # one token gone (a merge across the cut may take another)

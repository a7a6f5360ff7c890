"""LongBench prompts, lengths and scores against the official code's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_bench import tasks
from spark_bench.data import longbench
from spark_bench.metrics import longbench as lb_metrics

CASES = json.loads((Path(__file__).parent / "data" / "longbench_metric_cases.json").read_text())
OFFICIAL_21 = {
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "multifieldqa_zh",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "dureader",
    "gov_report",
    "qmsum",
    "multi_news",
    "vcsum",
    "trec",
    "triviaqa",
    "samsum",
    "lsht",
    "passage_count",
    "passage_retrieval_en",
    "passage_retrieval_zh",
    "lcc",
    "repobench-p",
}


def test_the_21_official_tasks():
    assert set(longbench.TASKS) == OFFICIAL_21
    assert set(longbench.LONGBENCH_E_TASKS) <= OFFICIAL_21 and len(longbench.LONGBENCH_E_TASKS) == 13


@pytest.mark.parametrize("task", sorted(CASES["official_task_scores"]))
def test_task_scores_equal_the_official_scorer(task):
    cases = CASES["cases"][task]
    got = tasks.get("longbench").score(
        task, [c[0] for c in cases], [c[1] for c in cases], CASES["all_classes"].get(task)
    )
    assert got == CASES["official_task_scores"][task]


@pytest.mark.parametrize("task", sorted(CASES["official_sample_scores"]))
def test_sample_scores_equal_the_official_scorer(task):
    classes = CASES["all_classes"].get(task)
    for (prediction, answers), expected in zip(
        CASES["cases"][task], CASES["official_sample_scores"][task], strict=True
    ):
        assert lb_metrics.score(task, [prediction], [answers], classes) == expected, (prediction, answers)


def test_every_task_has_a_known_metric():
    assert all(t.metric in lb_metrics.METRICS for t in longbench.TASKS.values())


def test_prompts_generation_lengths_and_chat_rules():
    record = {"context": "CTX", "input": "Q?"}
    assert tasks.get("longbench").build_prompt("hotpotqa", record) == (
        "Answer the question based on the given passages. Only give me the answer and do not output "
        "any other words.\n\nThe following are given passages.\nCTX\n\nAnswer the question based on "
        "the given passages. Only give me the answer and do not output any other words.\n\n"
        "Question: Q?\nAnswer:"
    )
    assert "asconcisely" in longbench.task("narrativeqa").prompt  # the official typo, kept
    assert (
        tasks.get("longbench").max_new_tokens("gov_report") == 512
        and tasks.get("longbench").max_new_tokens("hotpotqa") == 32
    )
    no_chat = {t for t in OFFICIAL_21 if not tasks.get("longbench").uses_chat_template(t)}
    assert no_chat == {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"}
    with pytest.raises(ValueError, match="'nope' is not one of"):
        tasks.get("longbench").max_new_tokens("nope")


@pytest.mark.parametrize("task", sorted(OFFICIAL_21))
def test_the_split_prompt_is_the_whole_prompt(task):
    record = {"context": "CONTEXT", "input": "QUESTION"}
    head, tail = longbench.split_prompt(task, record)
    assert head + tail == tasks.get("longbench").build_prompt(task, record)
    assert head.endswith("CONTEXT") and "CONTEXT" not in tail


def test_classification_skips_like_the_official_loop():
    # the official loop removes "Hu" (contained in the truth) and, iterating the list it mutates,
    # skips "Human" after it, which stays counted: 1 / 2.
    classes = ["Hu", "Human", "Human being"]  # official classification_score gives 0.5 here
    assert lb_metrics.classification("Human being", "Human being", all_classes=classes) == 0.5


GOLDEN_PROMPTS = json.loads((Path(__file__).parent / "data" / "longbench_prompt_golden.json").read_text())


@pytest.mark.parametrize("task", sorted(GOLDEN_PROMPTS["tasks"]))
def test_prompt_and_length_equal_the_official_config(task):
    """Golden prompts: the official dataset2prompt.json formatted as pred.py formats it."""
    golden = GOLDEN_PROMPTS["tasks"][task]
    assert tasks.get("longbench").build_prompt(task, GOLDEN_PROMPTS["record"]) == golden["prompt"]
    assert tasks.get("longbench").max_new_tokens(task) == golden["max_new_tokens"]

"""The local RULER generators (all 13 tasks) and RULER's scoring rules."""

from __future__ import annotations

import pytest

from spark_bench import tasks
from spark_bench.data import ruler
from spark_bench.data.ruler.haystack import NOISE_SENTENCE
from spark_bench.metrics.ruler import postprocess, string_match_all, string_match_part
from tests.helpers import prompt


@pytest.mark.parametrize("task", ruler.NIAH_TASKS)
@pytest.mark.parametrize("length", [512, 2048])
def test_needle_samples_fit_the_length_and_hold_their_needles(task, length, count_tokens):
    samples = ruler.generate(task, 3, length, count_tokens, seed=1)
    assert [s.id for s in samples] == [f"{task}/{i}" for i in range(3)]
    for sample in samples:
        assert count_tokens(prompt(sample)) + ruler.TOKENS_TO_GENERATE <= length
        # filled, not a stub: the haystack takes most of the room
        assert count_tokens(prompt(sample)) > 0.5 * (length - ruler.TOKENS_TO_GENERATE)
        spec = ruler.NIAH_TASKS[task]
        assert len(sample.answers) == spec.num_queries * spec.num_values
        for answer in sample.answers:
            assert sample.context.count(f"is: {answer}.") == 1  # the needle, exactly once
        assert sample.question not in sample.context
        assert sample.max_new_tokens == 128


def test_single_needle_wording_is_singular_as_in_ruler(count_tokens):
    sample = ruler.generate("niah_single_1", 1, 1024, count_tokens, seed=0)[0]
    assert sample.context.startswith(
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n"
    )
    key = sample.question.removeprefix("What is the special magic number for ").removesuffix(
        " mentioned in the provided text?"
    )
    assert key != sample.question and "-" in key
    assert sample.answer_prefix == f" The special magic number for {key} mentioned in the provided text is"
    assert f"One of the special magic numbers for {key} is: {sample.answers[0]}." in sample.context
    assert NOISE_SENTENCE in sample.context


def test_multi_value_wording_is_plural(count_tokens):
    sample = ruler.generate("niah_multivalue", 1, 1024, count_tokens, seed=0)[0]
    assert sample.context.startswith("Some special magic numbers are hidden")
    assert sample.question.startswith("What are all the special magic numbers for ")
    assert len(sample.answers) == 4 and all(len(a) == 7 and a.isdigit() for a in sample.answers)


def test_uuid_values(count_tokens):
    sample = ruler.generate("niah_single_3", 1, 1024, count_tokens, seed=0)[0]
    assert len(sample.answers[0]) == 36 and sample.answers[0].count("-") == 4


def test_generation_is_seeded_and_prefix_stable(count_tokens):
    five = ruler.generate("niah_single_2", 5, 1024, count_tokens, seed=3)
    assert ruler.generate("niah_single_2", 5, 1024, count_tokens, seed=3) == five
    assert ruler.generate("niah_single_2", 2, 1024, count_tokens, seed=3) == five[:2]
    assert ruler.generate("niah_single_2", 2, 1024, count_tokens, seed=4) != five[:2]


def test_unknown_task_names_the_choices(count_tokens):
    with pytest.raises(ValueError, match="'niah_nope' is not one of"):
        ruler.generate("niah_nope", 1, 1024, count_tokens, seed=0)


def test_task_facts():
    # RULER scripts/data/synthetic/constants.py tokens_to_generate per family
    expected = {"niah_single_1": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa_1": 32, "qa_2": 32}
    assert {t: tasks.get("ruler").max_new_tokens(t) for t in expected} == expected
    assert len(ruler.TASKS) == 13
    assert tasks.get("ruler").uses_chat_template("niah_multikey_3")
    with pytest.raises(ValueError):
        tasks.get("ruler").max_new_tokens("nope")


# Scores checked by hand against RULER's formulas (scripts/eval/synthetic/constants.py).
def test_string_match_all():
    preds = ["The numbers are 123 and 456.", "only 789", "nothing"]
    refs = [["123", "456"], ["789", "000"], ["1"]]
    # (1 + 0.5 + 0) / 3 * 100 = 50.0
    assert string_match_all(preds, refs) == 50.0
    assert string_match_all(["ABC"], [["abc"]]) == 100.0  # case-insensitive


def test_string_match_part():
    preds = ["Paris", "london calling", "x"]
    refs = [["paris", "france"], ["Rome", "London"], ["y"]]
    assert string_match_part(preds, refs) == round(2 / 3 * 100, 2) == 66.67


def test_postprocess_replaces_control_characters():
    assert postprocess("  a\tb\x00c \n") == "a\nb\nc"


def test_score_dispatches_and_rounds():
    assert tasks.get("ruler").score("niah_single_1", ["1234567"], [["1234567"]]) == 100.0
    assert tasks.get("ruler").score("niah_multivalue", ["1 2 3"], [["1", "2", "3", "4"]]) == 75.0
    assert tasks.get("ruler").score("qa_1", ["b"], [["a", "b"]]) == 100.0
    with pytest.raises(
        ValueError, match=r"unknown benchmark 'nope'; available: \['longbench', 'longbench_v2', 'ruler'\]"
    ):
        tasks.get("nope")
    with pytest.raises(ValueError, match="no predictions"):
        tasks.get("ruler").score("niah_single_1", [], [])


def test_average_is_the_unweighted_task_mean():
    assert tasks.mean_of_tasks({"a": 100.0, "b": 50.0, "c": 0.0}) == 50.0

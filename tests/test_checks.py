"""The shared checks of single settings: each names the bad value and what it must be."""

from __future__ import annotations

import pytest

from spark_bench.checks import check_fraction, check_positive_int, is_positive_int
from spark_bench.config import ConfigError
from spark_bench.presses.spark import SparKPress


@pytest.mark.parametrize("value", [1, 8, 131072])
def test_positive_integers_pass(value):
    assert is_positive_int(value)
    check_positive_int("n", value)


@pytest.mark.parametrize("value", [0, -3, True, False, 2.0, 2.5, "4", None])
def test_anything_else_is_named_with_its_setting(value):
    assert not is_positive_int(value)
    with pytest.raises(ValueError, match=f"^n={value!r} must be a positive integer \\(tokens\\)$"):
        check_positive_int("n", value, " (tokens)")


def test_the_caller_chooses_the_error_type():
    with pytest.raises(ConfigError, match=r"model\.max_prompt_tokens=0"):
        check_positive_int("model.max_prompt_tokens", 0, error=ConfigError)


@pytest.mark.parametrize("value", [0, 0.5, 0.999])
def test_fractions_in_zero_one_pass(value):
    check_fraction("key_ratio", value)


@pytest.mark.parametrize("value", [1, 1.0, -0.1, True, "0.5", None])
def test_fractions_outside_zero_one_are_named(value):
    with pytest.raises(ValueError, match=f"^key_ratio={value!r} is outside \\[0, 1\\): e.g. 0.5$"):
        check_fraction("key_ratio", value, ": e.g. 0.5")


@pytest.mark.parametrize("window_size", [True, 2.5, 0])
def test_spark_rejects_a_window_that_is_not_a_positive_integer(window_size):
    # 2.5 and True passed the old ``window_size < 1`` check and reached the window's slicing
    with pytest.raises(ValueError, match=f"window_size={window_size!r} must be a positive integer"):
        SparKPress(key_ratio=0.5, window_size=window_size)

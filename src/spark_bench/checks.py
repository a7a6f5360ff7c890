"""Checks of single settings, shared by the config, the knobs, the presses and the tasks.

Each names the bad value and what it must be, and raises ``error`` (``ConfigError`` where the
config's own checks call it, ``ValueError`` elsewhere). ``bool`` is rejected where a number is
due: YAML's ``true`` is an ``int`` to Python.
"""

from __future__ import annotations

from typing import Any


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_positive_int(name: str, value: Any, hint: str = "", error: type[ValueError] = ValueError) -> None:
    """``value`` is a positive integer; ``hint`` follows the message (`` (tokens)``)."""
    if not is_positive_int(value):
        raise error(f"{name}={value!r} must be a positive integer{hint}")


def check_fraction(name: str, value: Any, hint: str = "", error: type[ValueError] = ValueError) -> None:
    """``value`` is a fraction in [0, 1) (of channels or tokens pruned)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise error(f"{name}={value!r} is outside [0, 1){hint}")

"""The press knobs: the top-level settings presses read, each declared once, here.

A knob is a top-level key of the run config (``key_ratio=0.8`` on the command line) that press
configs read through interpolation (``${key_ratio}``); each press yaml lists the knobs it
reads under ``knobs:``. A knob the chosen press does not read is recorded as null and leaves
the run's identity alone, so ``no_press`` at two ``key_ratio`` values is one run.

Each entry gives the knob's name (also its ``results.json`` run field and its column in
``results.load_results``), its default (registered with Hydra as the ``knobs`` config, which
``conf/config.yaml`` composes first), its check, its tag in run-directory names, and where the
report shows it. Adding a knob is one entry here, then presses can read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spark_bench.checks import check_fraction, check_positive_int

# Where the report shows a knob: a column of the paper's table layout, or a suffix of a row's
# name (``snap_spark (λ=0.8, recovery=none)``) where it differs between runs.
LAYOUT, ROW = "layout", "row"
# The Hydra config the defaults are registered under (conf/config.yaml's defaults list names it).
CONFIG_NAME = "knobs"
# The key of a press config (conf/press/*.yaml) that lists the knobs the press reads.
PRESS_KEY = "knobs"


def fraction(nullable: bool = False) -> Callable[[str, Any], None]:
    """A fraction pruned, in [0, 1)."""

    def check(name: str, value: Any) -> None:
        if value is None and nullable:
            return
        check_fraction(name, value, f": it is the fraction pruned, e.g. {name}=0.5")

    return check


def positive_int(nullable: bool = False) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value is None and nullable:
            return
        check_positive_int(name, value)

    return check


def one_of(choices: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not one of {list(choices)}")

    return check


def recovery(name: str, value: Any) -> None:
    """One of SparK's recoveries (``spark_math.RECOVERY``)."""
    # imported here: spark_math loads torch, which the path and status helpers that read this
    # table do not need; a config check loads it anyway
    from spark_bench.spark_math import RECOVERY

    one_of(RECOVERY)(name, value)


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    check: Callable[[str, Any], None]  # raises ValueError naming the value and what is valid
    tag: str  # its prefix in run-directory names: cr0.1_kr0.5_...
    report: str  # LAYOUT or ROW
    # Whether every schema-1 results.json has it in its run block (the first knobs); a knob
    # added later is absent from older files, and the report reads it from their config.
    in_every_result: bool = False


# In the order of run-directory names (paths.knob_tags) and of results.json's run block.
KNOBS: tuple[Knob, ...] = (
    # the fraction of prefill tokens token presses evict (kvpress semantics) ...
    Knob("compression_ratio", 0.1, fraction(nullable=True), "cr", LAYOUT, in_every_result=True),
    # ... or a number of tokens kept per head instead (the paper's 128 ... 2048); the two are
    # exclusive (config.validate): compression_ratio=null kv_budget=128
    Knob("kv_budget", None, positive_int(nullable=True), "budget", LAYOUT, in_every_result=True),
    # λ: the fraction of key channels pruned (SparK per token, ThinK per head); the paper runs 0.5, 0.8
    Knob("key_ratio", 0.5, fraction(), "kr", LAYOUT, in_every_result=True),
    # the fraction of value channels pruned (a SparK extension; 0 = off, as the paper)
    Knob("value_ratio", 0.0, fraction(), "vr", ROW, in_every_result=True),
    # SparK's recovery of pruned entries
    Knob("recovery", "mean", recovery, "rec", ROW, in_every_result=True),
    # observation windows (last prompt queries): the token press's (SnapKV, PyramidKV) and the
    # channel press's (SparK, ThinK). 32 is the SnapKV paper's; the SparK reference runs 64 and
    # 32, which the paper grids in sweeps/ set.
    Knob("token_window", 32, positive_int(), "tw", ROW),
    Knob("channel_window", 32, positive_int(), "cw", ROW),
)
BY_NAME = {knob.name: knob for knob in KNOBS}
NAMES = tuple(BY_NAME)


def names(report: str | None = None) -> tuple[str, ...]:
    """The knobs' names, all or those the report shows as ``report`` (LAYOUT or ROW)."""
    return tuple(k.name for k in KNOBS if report is None or k.report == report)


def defaults() -> dict[str, Any]:
    return {knob.name: knob.default for knob in KNOBS}


def check(values: dict[str, Any]) -> None:
    """Each knob's own check, in table order; a ValueError for the first bad value."""
    for knob in KNOBS:
        knob.check(knob.name, values[knob.name])


def tag(name: str, value: Any) -> str:
    """``kr0.5``: a knob's value as run-directory names show it."""
    return f"{BY_NAME[name].tag}{value}"

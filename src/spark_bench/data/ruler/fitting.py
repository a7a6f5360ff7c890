"""RULER's length fitting, shared by every task family: the largest haystack whose prompt plus
the task's generated tokens fits the context length, found once by binary search and shrunk per
sample when a draw comes out too long (RULER scripts/data/synthetic/*.py, ``max_seq_length``)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import replace

from spark_bench.data.sample import Sample

CountTokens = Callable[[str], int]
# (haystack size, random stream, sample index) -> (sample, its full prompt text)
Build = Callable[[int, random.Random, int], tuple[Sample, str]]
# RULER: the binary search's upper bound is this many times the size a one-probe estimate gives.
SEARCH_SLACK = 3
# Each sample's size is searched from this fraction of the probe's size up (then below, if need be).
SEARCH_FLOOR = 0.8


def task_seed(seed: int, task: str) -> int:
    """A per-task stream, stable across Python versions (str hashes are salted)."""
    return seed * 1_000_003 + zlib.crc32(task.encode())


def fit_samples(
    task: str,
    num_samples: int,
    context_length: int,
    tokens_to_generate: int,
    count_tokens: CountTokens,
    seed: int,
    build: Build,
    step: int,
    min_size: int = 1,
) -> list[Sample]:
    """``num_samples`` samples of ``task`` with ``tokens(prompt) + tokens_to_generate <=
    context_length``, RULER's rule. The first k samples do not depend on ``num_samples``."""
    budget = context_length - tokens_to_generate
    probe_seed = task_seed(seed, task) + 1

    best, step = largest_size(
        lambda size: build(size, random.Random(probe_seed), 0)[1], budget, step, count_tokens, min_size
    )
    if not best:
        raise _too_short(task, context_length, tokens_to_generate)
    rng = random.Random(task_seed(seed, task))
    samples = []
    for index in range(num_samples):
        # Deviation: RULER shrinks an over-long draw by whole steps, which leaves some samples
        # several percent short of the length; we search each draw's largest fitting size
        # (each try replays the same random state), so every sample is within a unit of it.
        state = rng.getstate()

        def attempt(size: int, index: int = index, state: tuple = state) -> tuple[int, Sample, random.Random]:
            replay = random.Random()
            replay.setstate(state)
            sample, text = build(size, replay, index)
            return count_tokens(text), sample, replay

        fits = lambda n: attempt(n)[0] <= budget  # noqa: E731
        floor = max(min_size, int(best * SEARCH_FLOOR))
        ceiling = best + step
        while fits(ceiling):  # a draw cheaper than the probe: gallop up to a size that overflows
            floor, ceiling = ceiling, ceiling + 2 * (ceiling - best)
        size = _largest(fits, floor, ceiling) or _largest(fits, min_size, floor - 1)
        if not size:
            raise _too_short(task, context_length, tokens_to_generate)
        _, sample, replay = attempt(size)
        rng.setstate(replay.getstate())
        samples.append(replace(sample, id=f"{task}/{index}", task=task, max_new_tokens=tokens_to_generate))
    return samples


def _largest(fits: Callable[[int], bool], low: int, high: int) -> int:
    """The largest size in [low, high] that fits (binary search; sizes fit less as they grow),
    or 0 when ``low`` does not fit."""
    best = 0
    while low <= high:
        mid = (low + high) // 2
        if fits(mid):
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def largest_size(
    text_of: Callable[[int], str], budget: int, step: int, count_tokens: CountTokens, min_size: int = 1
) -> tuple[int, int]:
    """RULER's search: estimate tokens per haystack unit from probes, then binary-search the
    largest size whose text fits ``budget`` tokens. Returns (size, step); size
    0 when not even ``min_size`` units fit."""

    def fits(size: int) -> bool:
        return count_tokens(text_of(size)) <= budget

    # Deviation: where one RULER growth step alone overflows a short context (RULER would
    # emit an over-long sample), the step halves until a probe fits.
    while step > min_size and not fits(step):
        step = max(step // 2, min_size)
    if not fits(step):
        return 0, step
    # Deviation: RULER divides a probe's whole token count by its units, which overestimates the
    # cost of a unit when the prompt has a large fixed part (vt's and cwe's worked example) and
    # can put the bound below the answer; the marginal cost of a step does not.
    per_unit = max((count_tokens(text_of(2 * step)) - count_tokens(text_of(step))) / step, 1e-3)
    return _largest(fits, step, max(int(budget / per_unit * SEARCH_SLACK), 2 * step)), step


def _too_short(task: str, context_length: int, tokens_to_generate: int) -> ValueError:
    return ValueError(
        f"RULER {task}: dataset.context_length={context_length} cannot hold the prompt and "
        f"{tokens_to_generate} generated tokens; use a longer context"
    )

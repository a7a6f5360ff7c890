"""PyramidKV's per-layer budgets follow the PyramidKV authors' schedule: the observation window
whole in every layer, the rest of the budget spread arithmetically, bottom layer most."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from transformers import DynamicCache

from spark_bench.models import load_model
from spark_bench.presses import build_press, set_token_budget
from spark_bench.presses.budget import token_presses
from spark_bench.presses.pyramidkv import layer_budgets
from tests.helpers import compose_config

LAYERS = 32  # Llama-3.1-8B
BUDGETS = (128, 512, 1024, 2048)  # the paper's LongBench budgets
WINDOWS = (32, 64)  # SparK's window and kvpress's / the reference's SnapKV window


def plain_schedule(budget: int, layers: int, window: int, context: int, beta: int = 20) -> list[int]:
    """The schedule re-derived by hand, in fractions: KVCache-Factory's branches and bounds, an
    exact arithmetic sequence, rounded down, left-over tokens to the largest remainders."""
    if context < budget:
        return [context] * layers
    rest = budget - window
    if context < 2 * rest:
        return [budget] * layers
    low = rest // beta
    high = 2 * rest - low
    if high >= context - window:
        high = context - window
        low = 2 * rest - high
    exact = [high - Fraction(layer * (high - low), layers - 1) for layer in range(layers)]
    kept = [math.floor(value) for value in exact]
    remainders = sorted(range(layers), key=lambda layer: (kept[layer] - exact[layer], layer))
    for layer in remainders[: layers * rest - sum(kept)]:
        kept[layer] += 1
    return [window + value for value in kept]


def kvcache_factory_schedule(budget: int, layers: int, window: int, context: int) -> list[int]:
    """KVCache-Factory's own arithmetic (integer step), for the deviation it shows."""
    low = (budget - window) // 20
    high = 2 * (budget - window) - low
    if high >= context - window:
        high = context - window
        low = 2 * (budget - window) - high
    step = (high - low) // (layers - 1)
    return [window + high - layer * step for layer in range(layers)]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("context", [100, 200, 2100, 2400, 4000, 8000, 20_000, 131_072])
def test_layer_budgets_equal_the_plain_derivation(budget, window, context):
    kept = layer_budgets(budget, LAYERS, window, context)
    assert kept == plain_schedule(budget, LAYERS, window, context)
    assert all(a >= b for a, b in itertools.pairwise(kept)), "budgets never rise with depth"
    assert all(k <= context for k in kept)
    if context >= budget:
        assert sum(kept) == LAYERS * budget, "the total budget is honoured exactly"
        assert min(kept) > window, "every layer keeps its whole observation window"


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("budget", BUDGETS)
def test_the_pyramid_runs_from_2r_minus_r_over_beta_to_r_over_beta_beyond_the_window(budget, window):
    rest = budget - window
    kept = layer_budgets(budget, LAYERS, window, 50_000)
    assert kept[0] == window + 2 * rest - rest // 20 and kept[-1] == window + rest // 20
    reference = kvcache_factory_schedule(budget, LAYERS, window, 50_000)
    assert kept[0] == reference[0]  # the same bottom layer; the reference's floored step
    assert sum(reference) > LAYERS * budget  # makes its total overshoot, ours does not


def test_the_reference_schedule_keeps_the_window_where_the_old_one_dropped_it():
    """kvpress's pyramid included the window: at 128 tokens, window 32, its top layers kept 30,
    22, 14 and 6 tokens. Now each keeps the window and a little more."""
    top = layer_budgets(128, LAYERS, 32, 8000)[-4:]
    assert top == [54, 48, 42, 36]


def test_short_contexts_keep_all_or_a_uniform_budget():
    assert layer_budgets(512, 4, 32, 300) == [300] * 4  # shorter than the budget
    assert layer_budgets(512, 4, 32, 700) == [512] * 4  # shorter than 2 (budget - window)
    assert layer_budgets(16, 4, 32, 700) == [16] * 4  # a budget inside the window
    assert layer_budgets(512, 1, 32, 5000) == [512]


@pytest.mark.parametrize("bad", [{"budget": 0}, {"num_layers": 0}, {"window": -1}, {"beta": 1.5}])
def test_bad_arguments_name_the_value(bad):
    args = {"budget": 128, "num_layers": 32, "window": 32, "context_tokens": 1000} | bad
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=f"{name}={value!r} must be a positive integer"):
        layer_budgets(**args)


@pytest.fixture(scope="module")
def eight_layers():
    return load_model(compose_config(["model=tiny-llama", "model.config.num_hidden_layers=8"]).model)


@pytest.mark.parametrize("press_name", ["pyramidkv", "pyramid_think", "pyramid_spark"])
def test_every_pyramid_press_keeps_the_schedule_and_the_window_in_every_layer(eight_layers, press_name):
    budget, window, n_tokens = 64, 16, 300
    cfg = compose_config(
        [f"press={press_name}", "compression_ratio=null", f"kv_budget={budget}", f"token_window={window}"]
    )
    press = build_press(cfg.press)
    set_token_budget(press, budget, n_tokens)
    assert [p.window_size for p in token_presses(press)] == [window]
    ids = torch.randint(3, 5000, (1, n_tokens), generator=torch.Generator().manual_seed(0))
    dense, cache = DynamicCache(), DynamicCache()
    attention = eight_layers.model.config._attn_implementation
    with torch.inference_mode():
        eight_layers.model.model(input_ids=ids, past_key_values=dense)
        with press(eight_layers.model):
            eight_layers.model.model(input_ids=ids, past_key_values=cache)
    eight_layers.model.set_attn_implementation(attention)
    expected = layer_budgets(budget, 8, window, n_tokens)
    assert [layer.values.shape[2] for layer in cache.layers] == expected
    for full, kept in zip(dense.layers, cache.layers, strict=True):
        # values are untouched by ThinK and SparK: each of the window's values is still held (up to
        # the float noise of the press's per-layer attention; other tokens' values lie ~1 away)
        distance = torch.cdist(full.values[0, :, -window:].float(), kept.values[0].float())
        assert (distance.amin(-1) < 1e-3).all()

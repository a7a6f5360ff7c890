"""kv_budget keeps exactly that many tokens per head, through any composition."""

from __future__ import annotations

import pytest
import torch
from kvpress import AdaKVPress, ComposedPress, KnormPress, SnapKVPress, StreamingLLMPress, ThinKPress
from transformers import DynamicCache

from spark_bench.models import load_model
from spark_bench.presses.budget import budget_ratio, set_token_budget, token_presses
from tests.helpers import compose_config


@pytest.mark.parametrize("tokens", [129, 500, 1000, 1023, 4097, 131072])
@pytest.mark.parametrize("budget", [1, 64, 128, 1000])
def test_budget_ratio_floors_onto_the_budget(tokens, budget):
    ratio = budget_ratio(budget, tokens)
    assert 0 <= ratio < 1
    assert int(tokens * (1 - ratio)) == min(budget, tokens)


def test_token_presses_are_found_inside_compositions_and_wrappers():
    snap, stream = SnapKVPress(), StreamingLLMPress()
    assert token_presses(ComposedPress([snap, ThinKPress()])) == [snap]
    assert token_presses(AdaKVPress(stream)) == [stream]
    assert token_presses(ThinKPress()) == []
    assert token_presses(None) == []


def test_budget_is_honoured_by_a_real_prefill():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    press = ComposedPress([KnormPress(), ThinKPress(key_channel_compression_ratio=0.5)])
    ids = torch.randint(3, 1000, (1, 300))
    set_token_budget(press, 96, ids.shape[1])
    cache = DynamicCache()
    with torch.inference_mode(), press(loaded.model):
        loaded.model.model(input_ids=ids, past_key_values=cache)
    assert [layer.keys.shape[2] for layer in cache.layers] == [96, 96]

"""KV bytes are measured from the storages the cache holds."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from spark_bench import memory


def filled_cache(
    layers: int = 3, heads: int = 2, tokens: int = 10, dim: int = 8, dtype=torch.float32
) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(layers):
        cache.update(
            torch.randn(1, heads, tokens, dim, dtype=dtype),
            torch.randn(1, heads, tokens, dim, dtype=dtype),
            layer,
        )
    return cache


def test_bytes_of_a_dense_cache():
    cache = filled_cache(dtype=torch.bfloat16)
    expected = 3 * 2 * (1 * 2 * 10 * 8) * 2  # layers x (K, V) x elements x bytes
    assert memory.cache_bytes(cache) == expected
    assert memory.dense_cache_bytes(cache, 10) == expected
    assert memory.dense_cache_bytes(cache, 40) == 4 * expected


def test_compressed_layers_count_what_they_hold():
    cache = filled_cache()
    layer = cache.layers[0]
    index = torch.tensor([0, 2, 4, 6, 8])
    layer.keys = layer.keys[:, :, index].clone()
    layer.values = layer.values[:, :, index].clone()
    assert memory.cache_bytes(cache) == memory.dense_cache_bytes(cache, 10) - 2 * (2 * 5 * 8) * 4


def test_extra_buffers_of_a_layer_are_counted():
    cache = filled_cache(layers=1)
    base = memory.cache_bytes(cache)
    cache.layers[0].channel_mask = torch.zeros(1, 2, 10, 2, dtype=torch.uint8)
    cache.layers[0].stats = [torch.zeros(4, dtype=torch.float16)]
    assert memory.cache_bytes(cache) == base + 40 + 8


def test_a_view_counts_its_whole_storage_once():
    cache = filled_cache(layers=1)
    full = memory.cache_bytes(cache)
    cache.layers[0].crop(5)  # a view: the buffer stays allocated
    assert memory.cache_bytes(cache) == full
    cache.layers[0].alias = cache.layers[0].keys  # the same storage twice
    assert memory.cache_bytes(cache) == full


def test_peaks():
    assert memory.peak_rss_bytes() > 10 * 2**20
    if not torch.cuda.is_available():
        assert memory.peak_gpu_bytes() is None


def test_peak_tensor_bytes_replays_allocations_and_frees_on_a_cpu():
    megabyte = torch.empty(2**18)  # 1 MiB of float32
    state = {}

    def setup():
        state["held"] = megabyte * 2  # held when the measured call begins: 1 MiB
        megabyte + 1  # a temporary, freed at once

    def measured():
        doubled = state.pop("held") * 2  # 2 MiB held, then the setup's block is freed: 1 MiB
        stacked = torch.cat([doubled, doubled, doubled])  # 1 + 3 MiB: the peak
        del stacked
        torch.empty(2**18)  # 1 + 1 MiB, below the peak

    assert memory.peak_tensor_bytes(setup, measured, torch.device("cpu")) == (2**20, 4 * 2**20)


def test_peak_tensor_bytes_ignores_frees_of_blocks_from_an_earlier_session():
    state = {"old": torch.empty(2**18)}
    memory.peak_tensor_bytes(lambda: None, lambda: state.update(seen=torch.empty(2**18)), torch.device("cpu"))

    def measured():  # frees two blocks allocated before this session, then holds 1 MiB
        state.clear()
        torch.empty(2**17)  # 0.5 MiB, freed at once
        state["new"] = torch.empty(2**18)

    assert memory.peak_tensor_bytes(lambda: None, measured, torch.device("cpu")) == (0, 2**20)

"""The channel-sparse cache stores SparK's keys compactly and rebuilds them exactly."""

from __future__ import annotations

import pytest
import torch
from kvpress import ComposedPress, KVPressTextGenerationPipeline, SnapKVPress
from transformers import DynamicCache

from spark_bench import engine, memory
from spark_bench.cache import (
    ChannelSparseCache,
    ChannelSparseLayer,
    PackedKeys,
    PackedValues,
    pack_bits,
    unpack_bits,
)
from spark_bench.data import Sample
from spark_bench.models import load_model
from spark_bench.presses.spark import SparKPress
from spark_bench.spark_math import prune_values, sparsify_keys
from tests.helpers import compose_config


def test_bits_round_trip():
    bits = torch.rand(3, 5, 13) > 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 5, 2)
    assert torch.equal(unpack_bits(packed, 13), bits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("key_ratio", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("recovery", ["mean", "none"])
def test_pack_then_unpack_equals_sparsify_keys(dtype, head_dim, key_ratio, recovery):
    keys = torch.randn(1, 2, 37, head_dim).to(dtype)
    queries = torch.randn(1, 8, 32, head_dim).to(dtype)  # GQA: 4 query heads per KV head
    packed = PackedKeys.pack(keys, queries, key_ratio, recovery)
    assert torch.equal(packed.unpack(), sparsify_keys(keys, queries, key_ratio, recovery))
    uses_indices = head_dim - int(key_ratio * head_dim) < head_dim // 8
    assert (packed.rows.indices is not None) == uses_indices


def test_pruned_values_round_trip():
    values = torch.randn(1, 2, 20, 64, dtype=torch.bfloat16)
    assert torch.equal(PackedValues.pack(values, 0.5).unpack(), prune_values(values, 0.5))


def test_sampling_recoveries_cannot_be_packed():
    with pytest.raises(ValueError, match="'normal' cannot be stored channel-sparse"):
        PackedKeys.pack(torch.randn(1, 1, 4, 8), torch.randn(1, 1, 2, 8), 0.5, "normal")


def one_layer_cache(keys, queries, key_ratio, recovery="mean", values=None) -> ChannelSparseCache:
    cache = ChannelSparseCache()
    values = torch.randn_like(keys) if values is None else values
    cache.update(keys, values, 0)
    cache.layers[0].store(PackedKeys.pack(keys, queries, key_ratio, recovery), values)
    return cache


def test_bytes_match_a_hand_count_for_the_papers_geometry():
    heads, tokens = 8, 50
    keys = torch.randn(1, heads, tokens, 128, dtype=torch.bfloat16)
    cache = one_layer_cache(keys, torch.randn(1, 32, 32, 128, dtype=torch.bfloat16), 0.8)
    # per token and head: 26 kept bf16 (52) + 128-bit mask (16) + 128 sign bits (16) + a_t bf16 (2)
    per_token_head_keys = 52 + 16 + 16 + 2
    dense_values = heads * tokens * 128 * 2
    s_bytes = heads * 128 * 4  # the per-head query statistic, float32
    assert memory.cache_bytes(cache) == heads * tokens * per_token_head_keys + s_bytes + dense_values
    assert memory.dense_cache_bytes(cache, tokens) == 2 * heads * tokens * 128 * 2
    # recovery "none" keeps no signs, a_t or s
    cache = one_layer_cache(keys, torch.randn(1, 32, 32, 128, dtype=torch.bfloat16), 0.8, "none")
    assert memory.cache_bytes(cache) == heads * tokens * (52 + 16) + dense_values


def test_decode_appends_dense_and_crop_restores():
    keys, queries = torch.randn(1, 2, 30, 16), torch.randn(1, 4, 8, 16)
    cache = one_layer_cache(keys, queries, 0.5)
    layer = cache.layers[0]
    before = memory.cache_bytes(cache)
    new_k, new_v = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16)
    full_k, full_v = cache.update(new_k, new_v, 0)
    assert cache.get_seq_length() == 33 and layer.packed_length == 30
    assert torch.equal(full_k[:, :, :30], sparsify_keys(keys, queries, 0.5)) and torch.equal(
        full_k[:, :, 30:], new_k
    )
    assert torch.equal(full_v[:, :, 30:], new_v)
    layer.crop(30)
    assert cache.get_seq_length() == 30 and memory.cache_bytes(cache) >= before
    layer.crop(10)  # into the packed prefill: stays packed
    assert layer.packed_length == 10 and torch.equal(layer.keys, sparsify_keys(keys, queries, 0.5)[:, :, :10])


def test_dense_assignment_keeps_the_packing():
    keys, queries = torch.randn(1, 2, 30, 16), torch.randn(1, 4, 8, 16)
    cache = one_layer_cache(keys, queries, 0.5)
    cache.update(torch.randn(1, 2, 4, 16), torch.randn(1, 2, 4, 16), 0)
    layer = cache.layers[0]
    layer.keys = layer.keys[:, :, :31]  # kvpress's pipeline drops an answer like this
    layer.values = layer.values[:, :, :31]
    assert layer.packed_length == 30 and layer.get_seq_length() == 31
    with pytest.raises(ValueError, match="use crop"):
        layer.keys = layer.keys[:, :, :5]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-qwen3"])
def tiny(request):
    return load_model(compose_config([f"model={request.param}"]).model)


def snap_spark(key_ratio=0.5, recovery="mean", value_ratio=0.0):
    return ComposedPress(
        [
            SnapKVPress(compression_ratio=0.5, window_size=8),
            SparKPress(key_ratio=key_ratio, recovery=recovery, window_size=8, value_ratio=value_ratio),
        ]
    )


@pytest.mark.parametrize("value_ratio", [0.0, 0.5])
@pytest.mark.parametrize("recovery", ["mean", "none"])
@torch.inference_mode()
def test_logits_equal_the_dense_semantics(tiny, recovery, value_ratio):
    ids = torch.randint(3, 5000, (1, 120))
    follow = torch.randint(3, 5000, (1, 6))
    logits, held = [], []
    for cache in (DynamicCache(), ChannelSparseCache()):
        with snap_spark(0.5, recovery, value_ratio)(tiny.model):
            tiny.model.model(input_ids=ids, past_key_values=cache)
        held.append(memory.cache_bytes(cache))
        positions = torch.arange(120, 126).unsqueeze(0)
        logits.append(tiny.model(input_ids=follow, past_key_values=cache, position_ids=positions).logits)
    assert all(isinstance(layer, ChannelSparseLayer) and layer.packed_length == 60 for layer in cache.layers)
    # head_dim 16 in float32, half the channels pruned: keys 8 x 4 + 2-byte mask + (2 bytes of
    # signs for the 16 channels + 4-byte a_t, for mean) bytes of 64
    key_bytes = 32 + 2 + (6 if recovery == "mean" else 0)
    value_bytes = 32 + 2 + 4 if value_ratio else 64
    per_token = (key_bytes + value_bytes) / 128
    s_bytes = 2 * 2 * 16 * 4 if recovery == "mean" else 0  # layers x heads x D x float32
    assert held[1] == round(held[0] * per_token) + s_bytes
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def test_engine_answers_equal_with_either_cache(tiny, monkeypatch):
    sample = Sample("t/0", "t", "word " * 150, "Which word?", " Answer:", ("x",), 6)
    prompt = engine.encode(tiny.tokenizer, [sample], True)
    sparse = engine.answer(tiny.model, tiny.tokenizer, snap_spark(0.8), prompt, [6])[0]
    monkeypatch.setattr(engine, "ChannelSparseCache", DynamicCache)
    dense = engine.answer(tiny.model, tiny.tokenizer, snap_spark(0.8), prompt, [6])[0]
    assert sparse.text == dense.text
    assert sparse.kv_cache_dense_bytes == dense.kv_cache_dense_bytes
    assert sparse.kv_cache_bytes < 0.75 * dense.kv_cache_bytes


def test_works_with_the_kvpress_pipeline_and_generate(tiny):
    pipe = KVPressTextGenerationPipeline(model=tiny.model, tokenizer=tiny.tokenizer)
    context, questions = "word " * 150, ["Why?", "What is the longest word here?"]
    answers = {}
    for cache_class in (DynamicCache, ChannelSparseCache):
        out = pipe(context, questions=questions, press=snap_spark(0.5), cache=cache_class(), max_new_tokens=5)
        answers[cache_class] = out["answers"]
    assert answers[DynamicCache] == answers[ChannelSparseCache]
    ids = torch.randint(3, 5000, (1, 40))
    plain = tiny.model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=None)
    sparse = tiny.model.generate(
        ids, max_new_tokens=5, do_sample=False, eos_token_id=None, past_key_values=ChannelSparseCache()
    )
    assert torch.equal(plain, sparse)


@pytest.mark.parametrize(
    ("key_ratio", "value_ratio", "dtype"),
    [
        (0.001, 0.5, torch.float32),  # no key channel pruned (floor(λD) = 0), values pruned
        (0.1, 0.0, torch.bfloat16),  # λ = 0.1 at D = 128 (the key-ratio curve): 12 of 128 pruned
        (0.1, 0.1, torch.bfloat16),
    ],
)
def test_a_layer_is_stored_packed_only_where_that_is_smaller_than_dense(key_ratio, value_ratio, dtype):
    """Mask, signs and a_t cost more than the channels they spare at a small λ: those layers are
    held dense (their rebuilt keys and values, so answers do not change), never above dense."""
    keys, values = torch.randn(1, 4, 50, 128).to(dtype), torch.randn(1, 4, 50, 128).to(dtype)
    queries = torch.randn(1, 16, 32, 128).to(dtype)
    packed_keys = PackedKeys.pack(keys, queries, key_ratio, "mean")
    stored_values = PackedValues.pack(values, value_ratio) if value_ratio else values
    dense_bytes = keys.numel() * keys.element_size()  # of the keys, and of the values
    cache = ChannelSparseCache()
    cache.update(keys, values, 0)
    cache.layers[0].store(packed_keys, stored_values)
    layer = cache.layers[0]
    assert memory.tensor_bytes(layer.prefix_keys) <= dense_bytes
    assert memory.tensor_bytes(layer.prefix_values) <= dense_bytes
    assert torch.equal(layer.keys, sparsify_keys(keys, queries, key_ratio, "mean"))
    assert torch.equal(layer.values, prune_values(values, value_ratio) if value_ratio else values)
    layer.crop(20)  # a dense prefill part crops and grows as a packed one does
    cache.update(keys[:, :, :1], values[:, :, :1], 0)
    assert layer.get_seq_length() == 21 and layer.packed_length == 20
    assert torch.equal(layer.keys[:, :, :20], sparsify_keys(keys, queries, key_ratio, "mean")[:, :, :20])


def test_packed_keys_at_a_large_ratio_stay_packed():
    keys, queries = torch.randn(1, 4, 50, 128, dtype=torch.bfloat16), torch.randn(1, 16, 32, 128).bfloat16()
    cache = one_layer_cache(keys, queries, 0.8)
    assert isinstance(cache.layers[0].prefix_keys, PackedKeys)

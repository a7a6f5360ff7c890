"""Every press of the paper on tiny Llama / Qwen3 / Mistral models with GQA."""

from __future__ import annotations

import re

import pytest
import torch
from kvpress import ComposedPress, SnapKVPress
from kvpress import PyramidKVPress as KvpressPyramidKV
from transformers import DynamicCache

from spark_bench import engine
from spark_bench.config import ConfigError, validate
from spark_bench.data import Sample
from spark_bench.models import load_model
from spark_bench.presses import build_press, set_token_budget
from spark_bench.presses.pyramidkv import PyramidKVPress
from spark_bench.presses.spark import SparKPress, window_queries
from spark_bench.runner import run
from tests.helpers import compose_config, group_choices

PRESSES = group_choices("press")
TINY = ["tiny-llama", "tiny-qwen3", "tiny-mistral"]
PAPER_PRESSES = {
    "no_press",
    "snapkv",
    "pyramidkv",
    "streaming_llm",
    "tova",
    "observed_attention",
    "expected_attention",
    "think",
    "snap_think",
    "pyramid_think",
    "spark",
    "snap_spark",
    "pyramid_spark",
}
TOKEN_PRESSES = sorted(PAPER_PRESSES - {"no_press", "think", "spark"})  # those that evict tokens


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    return load_model(compose_config([f"model={request.param}"]).model)


def prefill(loaded, press, n_tokens: int = 200, seed: int = 0) -> DynamicCache:
    ids = torch.randint(3, 5000, (1, n_tokens), generator=torch.Generator().manual_seed(seed))
    cache = DynamicCache()
    with torch.inference_mode(), press(loaded.model) if press is not None else torch.inference_mode():
        loaded.model.model(input_ids=ids, past_key_values=cache)
    return cache


def test_every_press_of_the_paper_has_a_config():
    assert set(PRESSES) >= PAPER_PRESSES


@pytest.mark.parametrize("press", PRESSES)
@pytest.mark.parametrize("model", TINY)
def test_every_press_runs_through_the_runner(make_config, model, press):
    results = run(
        make_config(
            f"model={model}",
            f"press={press}",
            "key_ratio=0.5",
            "max_samples=1",
            "dataset.tasks=[niah_single_2]",
        )
    )
    assert results["run"]["press"] == press and results["run"]["n_samples"] == 1
    memory = results["memory"]
    assert 0 < memory["kv_cache_bytes"] <= memory["kv_cache_dense_bytes"]


@pytest.mark.parametrize("press_name", TOKEN_PRESSES)
def test_kept_tokens_equal_the_budget(tiny, press_name):
    cfg = compose_config(
        [
            f"press={press_name}",
            "compression_ratio=null",
            "kv_budget=64",
            "key_ratio=0.5",
            f"model={tiny.name}",
        ]
    )
    press = build_press(cfg.press)
    set_token_budget(press, 64, 200)
    attention = tiny.model.config._attn_implementation
    tiny.model.set_attn_implementation(cfg.model.attn_implementation)  # eager for observed_attention
    try:
        kept = [layer.keys.shape[2] for layer in prefill(tiny, press).layers]
    finally:
        tiny.model.set_attn_implementation(attention)
    if "pyramid" in press_name:  # per-layer budgets, falling with depth, averaging to the budget
        assert kept[0] > kept[-1] and abs(sum(kept) / len(kept) - 64) <= 1, kept
    else:
        assert kept == [64, 64]


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_kept_tokens_equal_the_ratio(tiny, ratio):
    kept = [
        layer.keys.shape[2]
        for layer in prefill(tiny, SnapKVPress(compression_ratio=ratio, window_size=8)).layers
    ]
    assert kept == [int(200 * (1 - ratio))] * 2


def test_a_budget_larger_than_the_context_keeps_everything(tiny):
    press = build_press(
        compose_config(["press=snap_spark", "compression_ratio=null", "kv_budget=4096"]).press
    )
    set_token_budget(press, 4096, 200)
    assert [layer.keys.shape[2] for layer in prefill(tiny, press).layers] == [200, 200]


def test_key_ratio_zero_leaves_the_token_press_cache_bit_identical(tiny):
    snap = prefill(tiny, SnapKVPress(compression_ratio=0.5, window_size=8))
    both = prefill(
        tiny, ComposedPress([SnapKVPress(compression_ratio=0.5, window_size=8), SparKPress(key_ratio=0.0)])
    )
    for a, b in zip(snap.layers, both.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_spark_prunes_the_kept_tokens_channels(tiny):
    cache = prefill(
        tiny,
        ComposedPress(
            [SnapKVPress(compression_ratio=0.5, window_size=8), SparKPress(key_ratio=0.5, recovery="none")]
        ),
    )
    for layer in cache.layers:
        assert layer.keys.shape[2] == 100
        assert (layer.keys == 0).sum(-1).eq(8).all()  # floor(0.5 x 16) channels of every kept token
        assert (layer.values != 0).all()  # values untouched by default


def test_prompts_shorter_than_the_window(tiny):
    cache = prefill(tiny, SparKPress(key_ratio=0.5, recovery="none", window_size=32), n_tokens=10)
    assert all(layer.keys.shape[2] == 10 and (layer.keys == 0).sum(-1).eq(8).all() for layer in cache.layers)


def test_window_queries_equal_the_models_own_queries(tiny, monkeypatch):
    """The recomputed queries (post-RoPE, through q_norm on Qwen3) equal those attention used."""
    import transformers.models.llama.modeling_llama as llama
    import transformers.models.mistral.modeling_mistral as mistral
    import transformers.models.qwen3.modeling_qwen3 as qwen3

    seen = {}
    for module in (llama, qwen3, mistral):
        original = module.apply_rotary_pos_emb

        def capture(q, k, cos, sin, *args, _original=original, **kwargs):
            q_rot, k_rot = _original(q, k, cos, sin, *args, **kwargs)
            seen.setdefault("q", q_rot)
            return q_rot, k_rot

        monkeypatch.setattr(module, "apply_rotary_pos_emb", capture)
    recomputed = {}

    class Probe(SparKPress):
        def compress(self, module, hidden_states, keys, values, attentions, kwargs):
            if module.layer_idx == 0:
                recomputed["q"] = window_queries(module, hidden_states, kwargs["position_embeddings"], 12)
            return keys, values

    prefill(tiny, Probe(key_ratio=0.5), n_tokens=40)
    torch.testing.assert_close(recomputed["q"], seen["q"][:, :, -12:], rtol=1e-5, atol=1e-5)


def test_kvpress_pyramidkv_crashes_after_prefill_and_ours_does_not():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    prompt = engine.encode(
        loaded.tokenizer, [Sample("t/0", "t", "word " * 300, "Why?", " A:", ("x",), 4)], True
    )
    with pytest.raises(RuntimeError, match="size of tensor"):
        engine.answer(
            loaded.model,
            loaded.tokenizer,
            KvpressPyramidKV(compression_ratio=0.5, window_size=8),
            prompt,
            [4],
        )
    (answer,) = engine.answer(
        loaded.model, loaded.tokenizer, PyramidKVPress(compression_ratio=0.5, window_size=8), prompt, [4]
    )
    assert answer.kv_cache_bytes == pytest.approx(answer.kv_cache_dense_bytes / 2, rel=0.02)


@torch.inference_mode()
def test_per_layer_attention_equals_sdpa(tiny):
    ids = torch.randint(3, 5000, (1, 60))
    reference = tiny.model(ids).logits
    cache = DynamicCache()
    tiny.model.set_attn_implementation("sdpa_per_layer")
    try:
        whole = tiny.model(ids).logits
        first = tiny.model(ids[:, :50], past_key_values=cache).logits
        rest = tiny.model(ids[:, 50:], past_key_values=cache).logits  # 10 new tokens after a cached prefix
    finally:
        tiny.model.set_attn_implementation("sdpa")
    torch.testing.assert_close(whole, reference, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), reference, rtol=1e-4, atol=1e-4)


def test_observed_attention_needs_eager():
    cfg = compose_config(["press=observed_attention"])
    assert cfg.model.attn_implementation == "eager"  # choosing the press switches the model
    validate(cfg)
    with pytest.raises(
        ConfigError, match=re.escape("model.attn_implementation='sdpa': use model.attn_implementation=eager")
    ):
        validate(compose_config(["press=observed_attention", "model.attn_implementation=sdpa"]))


def test_spark_press_rejects_bad_fields():
    with pytest.raises(ValueError, match="recovery='x' is not one of"):
        SparKPress(key_ratio=0.5, recovery="x")
    with pytest.raises(ValueError, match=r"value_ratio=1\.5"):
        SparKPress(value_ratio=1.5)


@pytest.mark.parametrize("recovery", ["exponential", "normal"])
def test_sampling_recovery_in_the_press_is_seeded(tiny, recovery):
    def keys(seed: int) -> list[torch.Tensor]:
        cache = prefill(tiny, SparKPress(key_ratio=0.5, recovery=recovery, seed=seed, window_size=8))
        return [layer.keys for layer in cache.layers]

    first, again, other = keys(1), keys(1), keys(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))

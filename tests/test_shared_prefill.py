"""One prefill for many presses (``engine.answer_shared``) answers exactly as each press alone.

Every press of conf/press, at a compression ratio and at a token budget, on tiny random models:
the shared prefill's answers, cache bytes and lengths equal the solo run's, byte for byte.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys

import pytest
import torch
from kvpress import ComposedPress, SnapKVPress, ThinKPress

from spark_bench import decode_together, engine, memory, tasks
from spark_bench.models import load_model, restore_attention
from spark_bench.presses import build_press
from spark_bench.presses.pyramidkv import PyramidKVPress
from spark_bench.presses.spark import SparKPress
from tests.helpers import compose_config, group_choices

# observed_attention reads attention weights, so its model runs eager attention: another model
# config, hence another prefill; it is checked against presses sharing that eager prefill.
EAGER = "observed_attention"
CONTEXT_TOKENS = 384


def _setting(model: str, press: str, budget: bool) -> list[str]:
    knobs = ["compression_ratio=null", "kv_budget=96"] if budget else ["compression_ratio=0.4"]
    return [f"model={model}", f"press={press}", "key_ratio=0.6", "value_ratio=0.25", *knobs]


def _prompt(cfg, tokenizer):
    dataset = compose_config(
        ["dataset=ruler", "dataset.tasks=[niah_multikey_1]", f"dataset.context_length={CONTEXT_TOKENS}"]
    ).dataset
    (sample,) = tasks.get("ruler").samples(dataset, tokenizer, seed=0, max_samples=1)
    return engine.encode(tokenizer, [sample], True, {}), [12]


def _solo_and_shared(model_name: str, presses: list[str], budget: bool):
    cfgs = [compose_config(_setting(model_name, press, budget)) for press in presses]
    loaded = load_model(cfgs[0].model)
    configured = loaded.model.config._attn_implementation
    prompt, lengths = _prompt(cfgs[0], loaded.tokenizer)
    kv_budgets = [
        cfg.kv_budget if cfg.press.knobs and "kv_budget" in cfg.press.knobs else None for cfg in cfgs
    ]
    solo = []
    for cfg, kv_budget in zip(cfgs, kv_budgets, strict=True):
        restore_attention(loaded.model, configured)
        solo.append(
            engine.answer(loaded.model, loaded.tokenizer, build_press(cfg.press), prompt, lengths, kv_budget)
        )
    restore_attention(loaded.model, configured)
    shared = engine.answer_shared(
        loaded.model, loaded.tokenizer, [build_press(cfg.press) for cfg in cfgs], prompt, lengths, kv_budgets
    )
    return solo, shared


def _same(solo, shared, presses):
    assert len(shared) == len(solo)
    for press, alone, together in zip(presses, solo, shared, strict=True):
        for a, b in zip(alone, together, strict=True):
            assert (a.text, a.context_tokens, a.kv_cache_bytes, a.kv_cache_dense_bytes) == (
                b.text,
                b.context_tokens,
                b.kv_cache_bytes,
                b.kv_cache_dense_bytes,
            ), press


SDPA_PRESSES = [p for p in group_choices("press") if p != EAGER and "pyramid" not in p]
PYRAMID_PRESSES = [p for p in group_choices("press") if "pyramid" in p]


@pytest.mark.parametrize("budget", [False, True], ids=["ratio", "budget"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen3"])
@pytest.mark.parametrize(
    "group", [SDPA_PRESSES, PYRAMID_PRESSES, [EAGER, "snapkv", "no_press"]], ids=["sdpa", "pyramid", "eager"]
)
def test_every_press_answers_from_a_shared_prefill_as_alone(model, group, budget):
    _same(*_solo_and_shared(model, group, budget), group)


def test_the_comparison_can_tell_presses_apart():
    """Guard for the test above: on this setting the presses answer differently, so equal answers
    mean equal caches, not a model that says the same whatever its cache holds."""
    solo, shared = _solo_and_shared("tiny-llama", SDPA_PRESSES, budget=False)
    assert len({answers[0].text for answers in solo}) > len(SDPA_PRESSES) // 2
    assert len({answers[0].kv_cache_bytes for answers in shared}) > 1


def test_presses_that_prefill_differently_are_refused():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    pyramid = PyramidKVPress(compression_ratio=0.5)
    reason = engine.unshareable(loaded.model, [SnapKVPress(compression_ratio=0.5), pyramid])
    assert "different attention implementations" in reason
    assert loaded.model.config._attn_implementation == "sdpa"  # the probe put the model back
    assert engine.unshareable(loaded.model, [SnapKVPress(compression_ratio=0.5), None]) is None


def test_the_shared_prefill_keeps_no_dense_copy_of_a_layer():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    presses = [SnapKVPress(compression_ratio=0.5), SnapKVPress(compression_ratio=0.25)]
    caches = [engine.ChannelSparseCache() for _ in presses]
    fan_out = engine.FanOutPress(presses, caches)
    shared = engine.DynamicCache()
    ids = torch.randint(0, loaded.model.config.vocab_size, (1, 128))
    with torch.inference_mode(), fan_out(loaded.model):
        loaded.model.model(input_ids=ids, past_key_values=shared)
    assert all(layer.keys.shape[-2] == 0 for layer in shared.layers)
    assert [c.layers[0].get_seq_length() for c in caches] == [64, 96]


def test_an_equal_scoring_stage_runs_once_per_layer_and_each_cache_is_as_alone(monkeypatch):
    """snapkv, snap_think and snap_spark at one compression ratio all start with the same
    SnapKV scoring of the same layer: the fan-out scores it once and gives the others copies of
    the kept tokens. Another ratio scores again, and SparK, not a pure scorer, always runs."""
    calls = collections.Counter()

    def counting(original, name):
        def counted(self, *args, **kwargs):
            calls[(name, getattr(self, "compression_ratio", None))] += 1
            return original(self, *args, **kwargs)

        return counted

    monkeypatch.setattr(SnapKVPress, "score", counting(SnapKVPress.score, "snapkv"))
    monkeypatch.setattr(SparKPress, "forward_hook", counting(SparKPress.forward_hook, "spark"))
    points = [("snapkv", 0.4), ("snap_think", 0.4), ("snap_spark", 0.4), ("snap_spark", 0.2)]
    cfgs = [
        compose_config(["model=tiny-llama", f"press={p}", f"compression_ratio={r}", "key_ratio=0.6"])
        for p, r in points
    ]
    loaded = load_model(cfgs[0].model)
    layers = loaded.model.config.num_hidden_layers
    ids = _random_ids(loaded, 160, seed=0)
    caches, _ = engine.prefill_fanned_out(loaded.model, [build_press(cfg.press) for cfg in cfgs], ids)
    assert calls[("snapkv", 0.4)] == layers and calls[("snapkv", 0.2)] == layers
    assert sum(n for (name, _), n in calls.items() if name == "spark") == 2 * layers
    _as_alone(loaded, caches, [build_press(cfg.press) for cfg in cfgs], ids)


def _random_ids(loaded, tokens: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, loaded.model.config.vocab_size, (1, tokens), generator=generator)


def _as_alone(loaded, caches, alone_presses, ids) -> None:
    """Each of ``caches`` (from a shared prefill of ``ids``) is the one its press leaves alone."""
    for press, shared in zip(alone_presses, caches, strict=True):
        alone = engine.ChannelSparseCache()
        with torch.inference_mode(), press(loaded.model):
            loaded.model.model(input_ids=ids, past_key_values=alone)
        assert [layer.get_seq_length() for layer in alone.layers] == [
            layer.get_seq_length() for layer in shared.layers
        ], press
        for solo_layer, shared_layer in zip(alone.layers, shared.layers, strict=True):
            assert torch.equal(solo_layer.keys, shared_layer.keys), press
            assert torch.equal(solo_layer.values, shared_layer.values), press
        assert memory.cache_bytes(alone) == memory.cache_bytes(shared), press


def _prefills_as_alone(loaded, presses, alone_presses, ids) -> None:
    _as_alone(loaded, engine.prefill_fanned_out(loaded.model, presses, ids)[0], alone_presses, ids)


def _window(ratio: float) -> SnapKVPress:
    return SnapKVPress(compression_ratio=ratio, window_size=16)


def test_a_composed_press_may_score_first_for_a_plain_one_and_no_hook_is_left_behind():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    ids = _random_ids(loaded, 100, seed=1)

    def presses():
        return [ComposedPress([_window(0.4), ThinKPress(0.5, window_size=16)]), _window(0.4)]

    shared = presses()
    _prefills_as_alone(loaded, shared, presses(), ids)
    assert all("forward_hook" not in vars(stage) for stage in [shared[0].presses[0], shared[1]])


def test_a_stage_used_twice_in_one_press_is_shared_only_for_its_first_use():
    """A composed press may name one stage object twice: its output is the first use's."""
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    ids = _random_ids(loaded, 100, seed=1)

    def presses():
        twice = _window(0.4)
        return [ComposedPress([twice, ThinKPress(0.5, window_size=16), twice]), _window(0.4)]

    _prefills_as_alone(loaded, presses(), presses(), ids)


GROUPS = {"sdpa": SDPA_PRESSES, "pyramid": PYRAMID_PRESSES, "eager": [EAGER, "snapkv", "no_press"]}


def _presses_and_prompt(model_name: str, group: list[str]):
    cfgs = [compose_config(_setting(model_name, press, budget=False)) for press in group]
    loaded = load_model(cfgs[0].model)
    prompt, _ = _prompt(cfgs[0], loaded.tokenizer)
    return loaded, (lambda: [build_press(cfg.press) for cfg in cfgs]), prompt


@pytest.mark.parametrize("group", GROUPS, ids=list(GROUPS))
def test_a_batch_of_one_decodes_exactly_as_alone(group):
    """Batched decoding's plumbing (each row's own cache, positions, attention function) is
    exact: with one row there is no batched product left to round differently."""
    loaded, presses, prompt = _presses_and_prompt("tiny-llama", GROUPS[group])
    configured = loaded.model.config._attn_implementation
    for press, twin in zip(presses(), presses(), strict=True):
        restore_attention(loaded.model, configured)
        alone = engine.answer(loaded.model, loaded.tokenizer, press, prompt, [24])
        restore_attention(loaded.model, configured)
        (batched,) = engine.answer_shared(loaded.model, loaded.tokenizer, [twin], prompt, [24], [None], True)
        assert [a.text for a in alone] == [a.text for a in batched], type(press).__name__
        assert loaded.model.config._attn_implementation != decode_together.NAME  # the batch's put back


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen3"])
@pytest.mark.parametrize("group", GROUPS, ids=list(GROUPS))
def test_batched_decoding_answers_as_one_after_another_here(model, group):
    """Not guaranteed in general (a batched product rounds differently), but on these models
    and prompts every press's answer is the same: the batch decodes each row from its own cache."""
    loaded, presses, prompt = _presses_and_prompt(model, GROUPS[group])
    kv_budgets = [None] * len(GROUPS[group])
    one_by_one = engine.answer_shared(loaded.model, loaded.tokenizer, presses(), prompt, [24], kv_budgets)
    together = engine.answer_shared(loaded.model, loaded.tokenizer, presses(), prompt, [24], kv_budgets, True)
    assert [[a.text for a in own] for own in together] == [[a.text for a in own] for own in one_by_one]
    assert len({own[0].text for own in together}) > 1  # the rows decode different caches
    assert all(own[0].decode_s > 0 and own[0].prefill_shared_by == len(kv_budgets) for own in together)


def test_a_row_that_stops_leaves_the_batch_and_the_others_go_on(monkeypatch):
    monkeypatch.setitem(decode_together.TIE_MARGINS, torch.float32, 0.0)  # no row leaves for a near-tie
    loaded, presses, prompt = _presses_and_prompt("tiny-llama", ["no_press", "snap_spark", "think"])
    model = loaded.model
    position, query = prompt.prefill_ids.shape[1], prompt.query_ids[0]
    with torch.inference_mode():
        caches = []
        for press in presses():  # each point's own prefilled cache
            cache = engine.ChannelSparseCache()
            with press(model) if press is not None else contextlib.nullcontext():
                model.model(input_ids=prompt.prefill_ids, past_key_values=cache)
            caches.append(cache)
        lengths = [[layer.get_seq_length() for layer in c.layers] for c in caches]

        def alone(index: int, stops: set[int]) -> list[int]:
            ids = engine._greedy(model, caches[index], query, position, 20, stops)
            for layer, length in zip(caches[index].layers, lengths[index], strict=True):
                layer.crop(length)
            return ids

        stop = alone(1, set())[3]  # the second point stops before its fourth token
        expected = [alone(index, {stop}) for index in range(3)]
        first = [engine._query_logits(model, c, query, position) for c in caches]
        rows, unsure = decode_together.greedy_together(
            model, caches, first, position + query.shape[1], 20, {stop}
        )
    assert rows == expected and unsure == []
    assert len(expected[1]) == 3 and max(len(e) for e in expected) > 3  # one left, another went on


@pytest.mark.parametrize("margin", [0.0, float("inf")], ids=["never", "always"])
def test_a_near_tie_in_the_batch_is_decoded_again_alone(monkeypatch, margin):
    """With every batched step a near-tie, every point is decoded again alone, and answers as
    alone; with none, none is."""
    monkeypatch.setitem(decode_together.TIE_MARGINS, torch.float32, margin)
    loaded, presses, prompt = _presses_and_prompt("tiny-llama", SDPA_PRESSES[:4])
    kv_budgets = [None] * 4
    one_by_one = engine.answer_shared(loaded.model, loaded.tokenizer, presses(), prompt, [24], kv_budgets)
    together = engine.answer_shared(loaded.model, loaded.tokenizer, presses(), prompt, [24], kv_budgets, True)
    assert [[a.text for a in own] for own in together] == [[a.text for a in own] for own in one_by_one]
    assert {own[0].decoded_again for own in together} == {margin > 0}


@pytest.mark.subprocess
def test_batched_attention_is_not_wrapped_by_kvpress_whatever_is_imported_first():
    # kvpress wraps every attention function registered when it is imported; wrapped, ``rows``
    # would take a decode step for a prefill (one query, one new key) and clear head-wise
    # presses' masks before each row's own (wrapped) attention reads them
    check = (
        "from spark_bench import decode_together\n"
        "import kvpress\n"
        "from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS\n"
        "assert ALL_ATTENTION_FUNCTIONS[decode_together.NAME] is decode_together.rows\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True, text=True)


# torch's float32 precision settings, parents before children: setting a parent also sets the
# children left at "none", so they are put back in this order
_PRECISION_SETTINGS = ("", "cudnn", "cudnn.conv", "cudnn.rnn", "cuda.matmul", "mkldnn", "mkldnn.matmul")


def _setting_object(path: str):
    target = torch.backends
    for name in filter(None, path.split(".")):
        target = getattr(target, name)
    return target


@pytest.fixture
def float32_precision():
    """Lets a test change torch's float32 precision settings; all are put back after it."""
    before = {path: _setting_object(path).fp32_precision for path in _PRECISION_SETTINGS}
    yield
    for path, value in before.items():
        _setting_object(path).fp32_precision = value


def _reduced(path: str, precision: str):
    return lambda: setattr(_setting_object(path), "fp32_precision", precision)


REDUCED_CPU = {
    "cpu-matmul-bf16": _reduced("mkldnn.matmul", "bf16"),
    "cpu-matmul-tf32": _reduced("mkldnn.matmul", "tf32"),
    "cpu-backend-bf16": _reduced("mkldnn", "bf16"),
    "every-backend-tf32": _reduced("", "tf32"),
    "set_float32_matmul_precision-high": lambda: torch.set_float32_matmul_precision("high"),
    "set_float32_matmul_precision-medium": lambda: torch.set_float32_matmul_precision("medium"),
}


@pytest.mark.parametrize("reduce", REDUCED_CPU.values(), ids=list(REDUCED_CPU))
def test_float32_with_reduced_precision_products_decodes_one_by_one(monkeypatch, float32_precision, reduce):
    """The near-tie margin was measured with full float32 products: where a float32 model's
    products run in TF32 or bf16 inside (``torch.set_float32_matmul_precision("high")``, common
    in training code), a batched step rounds far more than the margin allows, so the points
    decode one after another."""
    loaded, presses, prompt = _presses_and_prompt("tiny-llama", SDPA_PRESSES[:3])
    assert loaded.model.dtype == torch.float32 and decode_together.batches(loaded.model)

    def batched(*args, **kwargs):
        raise AssertionError("decoded as a batch under reduced-precision float32 products")

    monkeypatch.setattr(decode_together, "greedy_together", batched)
    reduce()
    assert not decode_together.batches(loaded.model)
    together = engine.answer_shared(loaded.model, loaded.tokenizer, presses(), prompt, [8], [None] * 3, True)
    assert all(len(own) == 1 and own[0].decode_s > 0 for own in together)


REDUCED_CUDA = {
    "cuda-matmul-tf32": _reduced("cuda.matmul", "tf32"),
    "cuda-backend-tf32": _reduced("cudnn", "tf32"),  # the CUDA backend's own level
    "every-backend-tf32": _reduced("", "tf32"),
    "allow_tf32": lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", True),
    "set_float32_matmul_precision-high": lambda: torch.set_float32_matmul_precision("high"),
}


@pytest.mark.parametrize("reduce", REDUCED_CUDA.values(), ids=list(REDUCED_CUDA))
def test_float32_precision_of_cuda_products_is_read_from_the_cuda_settings(float32_precision, reduce):
    """The settings can be changed without a GPU: each of these makes CUDA's float32 products
    TF32, so a GPU job decodes one by one."""
    cuda = torch.device("cuda")
    assert decode_together.float32_matmul_precision(cuda) == "ieee"
    reduce()
    assert decode_together.float32_matmul_precision(cuda) == "tf32"


def test_an_explicit_full_precision_below_a_reduced_parent_is_full_precision(float32_precision):
    _setting_object("").fp32_precision = "tf32"
    _setting_object("cuda.matmul").fp32_precision = "ieee"
    assert decode_together.float32_matmul_precision(torch.device("cuda")) == "ieee"


def test_a_device_we_have_not_measured_does_not_decode_in_batches():
    assert decode_together.float32_matmul_precision(torch.device("meta")) == "unknown"

"""One prefill, many presses: each layer's full keys and values handed to every press in turn.

A kvpress press compresses a layer's cache in a forward hook, after that layer's attention has
run on the full context; the hidden states it passes on are the same whatever the press. So one
prefill can serve several presses: at each layer, ``FanOutPress`` copies the layer's full keys
and values into each press's own cache, runs that press's hook on it (the same call kvpress
makes, with the point's cache in place of the model's), and then frees the shared layer. Each
cache ends as the press alone would have left it, and peak memory is about one dense layer on
top of the compressed caches.

Points of a sweep often start alike: snapkv, snap_think and snap_spark at one budget all begin
with the same SnapKV scoring of the same layer. A first stage that is a pure scorer
(``SHAREABLE_STAGES``: its kept tokens follow from its settings and the layer alone) runs once
per layer for all presses whose first stage equals it; the others get copies of the tokens it
kept and go on with their own later stages, so each cache is still the one its press alone
leaves. SparK and ThinK, which prune in place or draw recovery samples, always run themselves.

Two things would make a shared prefill differ from a solo one, and ``engine.unshareable`` says so:
a press that switches the model's attention for its prefill (``PyramidKVPress`` to per-layer
SDPA; eager attention for attention-reading presses is a model setting) must share only with
presses that leave the same attention, and a press that hooks the model its own way (a custom
``__call__``) cannot be driven through this one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from kvpress import (
    BasePress,
    ComposedPress,
    ExpectedAttentionPress,
    KnormPress,
    ObservedAttentionPress,
    SnapKVPress,
    StreamingLLMPress,
    TOVAPress,
)
from kvpress.presses.base_press import is_prefilling
from transformers import Cache

from spark_bench.presses.pyramidkv import PyramidKVPress

# kvpress scorers with the standard hook (score each token, keep the top ones, no state between
# calls), exactly these types: a subclass may score with state, as RandomPress draws.
SHAREABLE_STAGES = (
    SnapKVPress,
    PyramidKVPress,
    ExpectedAttentionPress,
    ObservedAttentionPress,
    StreamingLLMPress,
    TOVAPress,
    KnormPress,
)


def custom_hooks(press: BasePress | None) -> bool:
    """Whether ``press`` (or a press it composes) hooks the model other than kvpress's way."""
    if press is None:
        return False
    if type(press).__call__ is not BasePress.__call__:
        return True
    return any(custom_hooks(part) for part in getattr(press, "presses", ()))


def prefill_attention(model, press: BasePress | None) -> str:
    """The attention implementation ``model`` prefills with under ``press`` (presses may switch
    it in ``post_init_from_model``); the model is put back as it was."""
    before = model.config._attn_implementation
    if press is None:
        return before
    press.post_init_from_model(model)
    during = model.config._attn_implementation
    if during != before:
        model.set_attn_implementation(before)
    return during


@dataclass
class FanOutPress(BasePress):
    """Drive ``presses[i]`` on ``caches[i]`` from one prefill (``None``: keep the layer whole).

    ``compress_s[i]`` accumulates the seconds press ``i`` spent in its hooks (on a GPU they time
    the kernel launches, not the kernels: the work is queued)."""

    presses: Sequence[BasePress | None] = ()
    caches: Sequence[Cache] = ()
    compress_s: list[float] = field(default_factory=list)

    def __post_init__(self):
        if len(self.presses) != len(self.caches):
            raise ValueError(f"{len(self.presses)} presses for {len(self.caches)} caches")
        self.compress_s = [0.0] * len(self.presses)

    def post_init_from_model(self, model):
        for press in self.presses:
            if press is not None:
                press.post_init_from_model(model)

    def forward_hook(self, module, input, kwargs, output):
        hidden_states = kwargs["hidden_states"]
        if not is_prefilling(kwargs["cache_position"], hidden_states.shape[1]):
            return output
        shared = kwargs["past_key_values"]
        layer_idx = module.layer_idx
        layer = shared.layers[layer_idx]
        keys, values = layer.keys, layer.values
        stages = [_shareable_first_stage(press) for press in self.presses]
        kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # first stage's output by press index
        for index, (press, cache) in enumerate(zip(self.presses, self.caches, strict=True)):
            cache.update(keys, values, layer_idx)  # a copy, as the model's own update makes
            if press is None:
                continue
            start = time.perf_counter()
            with _first_stage_shared(stages, index, kept, cache.layers[layer_idx]):
                press.forward_hook(module, input, {**kwargs, "past_key_values": cache}, output)
            self.compress_s[index] += time.perf_counter() - start
        # every press holds its own copy now: the shared layer is not read again
        layer.keys, layer.values = keys[:, :, :0].clone(), values[:, :, :0].clone()
        return output


def _shareable_first_stage(press: BasePress | None) -> BasePress | None:
    """The stage ``press`` starts with (itself, or a composed press's first), where its output
    may be shared with an equal stage's (``SHAREABLE_STAGES``); else None."""
    # exactly ComposedPress: a subclass may run its stages its own way
    stage = press.presses[0] if type(press) is ComposedPress and press.presses else press
    return stage if type(stage) in SHAREABLE_STAGES else None


@contextlib.contextmanager
def _first_stage_shared(
    stages: Sequence[BasePress | None],
    index: int,
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]],
    layer,
) -> Iterator[None]:
    """While press ``index`` runs on ``layer``: if an earlier press's first stage equals its own
    (same type and settings), its first stage copies that stage's kept tokens instead of scoring
    again; if a later press's equals it, the tokens it keeps are saved in ``kept`` for them.
    Copies both ways: a later stage (ThinK) prunes the layer's tensors in place."""
    stage = stages[index]
    if stage is None:
        yield
        return
    earlier = next((i for i in range(index) if stages[i] == stage), None)
    wanted_later = any(other == stage for other in stages[index + 1 :])
    if earlier is None and not wanted_later:
        yield
        return

    def hook(module, input, kwargs, output):
        del stage.forward_hook  # its first use only: a press may use one stage object twice
        if earlier is not None:
            keys, values = kept[earlier]
            layer.keys, layer.values = keys.clone(), values.clone()
            return output
        output = type(stage).forward_hook(stage, module, input, kwargs, output)
        kept[index] = (layer.keys.clone(), layer.values.clone())
        return output

    stage.forward_hook = hook  # the instance's: ComposedPress calls its stages' hooks by name
    try:
        yield
    finally:
        vars(stage).pop("forward_hook", None)

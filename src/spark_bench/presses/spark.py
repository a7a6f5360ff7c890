"""SparK (arXiv 2508.15212) as a kvpress press: query-aware key-channel pruning with recovery.

The mathematics lives in ``spark_bench.spark_math``; this module reads the window queries from
the model and hands the layer to it. The press never imports the cache: a cache layer that can
hold SparK keys channel-sparse offers ``store_spark``, and the press calls it where it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kvpress import BasePress
from kvpress.presses.base_press import is_prefilling
from kvpress.utils import get_prerope_query_states
from torch import nn
from transformers.models.llama.modeling_llama import rotate_half

from spark_bench.checks import check_fraction, check_positive_int
from spark_bench.spark_math import (
    PACKABLE_RECOVERY,
    check_key_pruning,
    prune_values,
    sparsify_keys,
)


def window_queries(
    module: nn.Module, hidden_states: torch.Tensor, position_embeddings, window: int
) -> torch.Tensor:
    """Post-RoPE queries of the last ``window`` prompt positions (all of a shorter prompt), through
    the model's own projection and query norm (kvpress's helper knows Qwen3/Gemma3 norms)."""
    window = min(window, hidden_states.shape[1])
    queries = get_prerope_query_states(module, hidden_states[:, -window:])
    cos, sin = position_embeddings
    cos, sin = cos[:, -window:].unsqueeze(1), sin[:, -window:].unsqueeze(1)
    return queries * cos + rotate_half(queries) * sin


@dataclass
class SparKPress(BasePress):
    """SparK: channel pruning of the keys in the cache.

    Compose after a token press (``ComposedPress([SnapKVPress(...), SparKPress(...)])``); alone it
    keeps every token. With a ``ChannelSparseCache`` (what the runner uses) each layer is stored
    packed (``spark_bench.cache``); with any other cache the keys come back dense with their
    recovered entries. The sampling recoveries and ``adaptive`` are always stored dense.

    key_ratio: λ, fraction of key channels pruned per token (``floor(λ·D)``).
    recovery: ``none`` | ``mean`` (paper) | ``exponential`` | ``normal``.
    window_size: observation window of last queries (32 in the paper).
    value_ratio: fraction of value channels pruned per token (0: values untouched, as the paper).
    adaptive: per-token channel count from saliency buckets instead of ``key_ratio``.
    seed: seeds the sampling recoveries; each layer draws from ``seed + layer index``.
    """

    key_ratio: float = 0.0
    recovery: str = "mean"
    window_size: int = 32
    value_ratio: float = 0.0
    adaptive: bool = False
    seed: int = 0

    def __post_init__(self):
        check_key_pruning(self.key_ratio, self.recovery)
        check_fraction("value_ratio", self.value_ratio)
        check_positive_int("window_size", self.window_size)

    @property
    def compression_ratio(self) -> float:
        return 0.0  # SparK evicts no token; ComposedPress multiplies the kept fractions

    @compression_ratio.setter
    def compression_ratio(self, value: float) -> None:
        raise AttributeError("SparK evicts no token: set key_ratio, or the token press's ratio")

    def forward_hook(self, module, input, kwargs, output):
        """Where the cache layer can hold SparK keys channel-sparse, let it store the layer so;
        otherwise kvpress's dense path (``compress``)."""
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        store_spark = getattr(layer, "store_spark", None)
        if store_spark is None or self.recovery not in PACKABLE_RECOVERY or self.adaptive:
            return super().forward_hook(module, input, kwargs, output)
        hidden_states = kwargs["hidden_states"]
        if not is_prefilling(kwargs["cache_position"], hidden_states.shape[1]):
            return output
        dim = module.head_dim
        if math.floor(self.key_ratio * dim) == 0 and math.floor(self.value_ratio * dim) == 0:
            return output
        queries = window_queries(module, hidden_states, kwargs["position_embeddings"], self.window_size)
        store_spark(queries, self.key_ratio, self.recovery, self.value_ratio)
        return output

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        if self.key_ratio == 0 and not self.adaptive and self.value_ratio == 0:
            return keys, values
        queries = window_queries(module, hidden_states, kwargs["position_embeddings"], self.window_size)
        generator = None
        if self.recovery in ("exponential", "normal"):
            generator = torch.Generator(device=keys.device).manual_seed(self.seed + module.layer_idx)
        keys = sparsify_keys(keys, queries, self.key_ratio, self.recovery, generator, self.adaptive)
        return keys, prune_values(values, self.value_ratio)

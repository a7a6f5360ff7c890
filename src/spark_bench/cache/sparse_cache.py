"""A transformers cache whose compressed layers hold SparK keys channel-sparse.

``ChannelSparseCache`` behaves as a ``DynamicCache`` until a SparK press stores a layer packed
(``ChannelSparseLayer.store_spark``). From then on the layer holds the prefill's keys (and pruned
values) packed, plus the tokens generated after the prefill dense (``tail``): decoding appends
there. Each attention call rebuilds that one layer's dense keys on the fly and drops them
after use, so the whole cache is never materialised at once.

Packing is never allowed to cost more than dense: at a small λ the mask, signs and ``a_t`` of a
key row outweigh the channels it spares (D = 128 in bf16 at λ = 0.1: 266 bytes for 256), and
with no channel pruned at all they are pure overhead. ``store`` keeps each part (keys, values)
packed only where that holds fewer bytes, and otherwise its rebuilt dense tensor: the same
numbers, so answers do not depend on the choice.

``layer.keys`` / ``layer.values`` stay readable and assignable for code written against
``DynamicLayer`` (kvpress's pipeline slices them to drop an answer): reading rebuilds dense,
assigning a tensor that starts with the packed prefill keeps the packing.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import Cache

from spark_bench.cache.packing import PackedKeys, PackedValues
from spark_bench.memory import tensor_bytes

Prefix = PackedKeys | PackedValues | torch.Tensor  # a layer's prefill part, packed or dense


def _smaller_of(part: PackedKeys | PackedValues | torch.Tensor) -> Prefix:
    """``part`` if it is dense or its packing holds fewer bytes than dense, else its rebuild."""
    if isinstance(part, torch.Tensor):
        return part
    batch, heads, length, dim = part.shape()
    element = part.rows.kept.element_size()
    return part if tensor_bytes(part) < batch * heads * length * dim * element else part.unpack()


def _length(prefix: Prefix) -> int:
    return prefix.shape[-2] if isinstance(prefix, torch.Tensor) else prefix.length


def _crop(prefix: Prefix, length: int) -> Prefix:
    if isinstance(prefix, torch.Tensor):
        return prefix[:, :, :length]
    prefix.crop(length)
    return prefix


def _prefix_then_tail(prefix: Prefix, tail: torch.Tensor) -> torch.Tensor:
    """The prefill (rebuilt if packed) followed by the dense tail, rebuilt straight into one
    buffer (a concatenation would copy the whole layer once more at every decoding step)."""
    if isinstance(prefix, torch.Tensor):
        return torch.cat([prefix, tail], dim=-2)
    batch, heads, length, dim = prefix.shape()
    out = tail.new_empty((batch, heads, length + tail.shape[-2], dim))
    prefix.unpack(out=out[:, :, :length])
    out[:, :, length:] = tail
    return out


class ChannelSparseLayer(DynamicLayer):
    """One layer: a stored prefill (keys and values, each packed or dense) and a dense tail."""

    def __init__(self) -> None:
        self.prefix_keys: Prefix | None = None
        self.prefix_values: Prefix | None = None
        self.tail_keys: torch.Tensor | None = None
        self.tail_values: torch.Tensor | None = None
        super().__init__()

    @property
    def packed_length(self) -> int:
        """Tokens of the stored prefill (0 before ``store``)."""
        return _length(self.prefix_keys) if self.prefix_keys is not None else 0

    def store(self, keys: PackedKeys | torch.Tensor, values: PackedValues | torch.Tensor) -> None:
        """Replace this layer's content with a compressed prefill: each part is kept packed
        where that is smaller than dense, else as its rebuilt dense tensor."""
        self.prefix_keys, self.prefix_values = _smaller_of(keys), _smaller_of(values)
        self._empty_tails()

    def store_spark(self, queries: torch.Tensor, key_ratio: float, recovery: str, value_ratio: float) -> None:
        """Store this layer's content as SparK leaves it: keys as ``spark_math.sparsify_keys``
        (window ``queries``, ``recovery`` in ``PACKABLE_RECOVERY``), values as ``prune_values``.
        The SparK press calls this on any cache layer that has it."""
        keys, values = self.keys, self.values
        packed_values = PackedValues.pack(values, value_ratio) if value_ratio > 0 else values
        self.store(PackedKeys.pack(keys, queries, key_ratio, recovery), packed_values)

    def _empty_tails(self) -> None:
        # fresh tensors: an empty view would keep the whole dense prefill's storage alive
        self.tail_keys = self.tail_keys.new_empty((*self.tail_keys.shape[:2], 0, self.tail_keys.shape[-1]))
        self.tail_values = self.tail_values.new_empty(
            (*self.tail_values.shape[:2], 0, self.tail_values.shape[-1])
        )

    # -- DynamicLayer's interface ---------------------------------------------------------
    @property
    def keys(self) -> torch.Tensor | None:
        """Dense keys: the stored prefill (rebuilt if packed), then the tail."""
        if self.prefix_keys is None:
            return self.tail_keys
        return _prefix_then_tail(self.prefix_keys, self.tail_keys)

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self.tail_keys = self._beyond_prefix(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        """Dense values: the stored prefill (rebuilt if packed), then the tail."""
        if self.prefix_values is None:
            return self.tail_values
        return _prefix_then_tail(self.prefix_values, self.tail_values)

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self.tail_values = self._beyond_prefix(tensor)

    def _beyond_prefix(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """The part of an assigned dense tensor past the packed prefill."""
        packed = self.packed_length
        if packed == 0 or tensor is None:
            return tensor
        if tensor.shape[-2] < packed:
            raise ValueError(
                f"assigning {tensor.shape[-2]} tokens over a packed prefill of {packed}: use crop()"
            )
        return tensor[:, :, packed:]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.tail_keys = key_states[:, :, :0]
        self.tail_values = value_states[:, :, :0]
        self.is_initialized = True

    def update(self, key_states, value_states, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.tail_keys = torch.cat([self.tail_keys, key_states], dim=-2)
        self.tail_values = torch.cat([self.tail_values, value_states], dim=-2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            return 0
        return self.packed_length + self.tail_keys.shape[-2]

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.get_seq_length() + max_length
        packed = self.packed_length
        if max_length >= packed:
            self.tail_keys = self.tail_keys[:, :, : max_length - packed]
            self.tail_values = self.tail_values[:, :, : max_length - packed]
            return
        self.prefix_keys = _crop(self.prefix_keys, max_length)
        self.prefix_values = _crop(self.prefix_values, max_length)
        self._empty_tails()

    def dense_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Key and value shapes as a dense layer would hold them, without rebuilding them."""
        key_shape, value_shape = list(self.tail_keys.shape), list(self.tail_values.shape)
        key_shape[2] = value_shape[2] = self.get_seq_length()
        return tuple(key_shape), tuple(value_shape)

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("ChannelSparseLayer holds one sequence (batch size 1)")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("ChannelSparseLayer holds one sequence (batch size 1)")


class ChannelSparseCache(DynamicCache):
    """A DynamicCache of ``ChannelSparseLayer``s (usable with kvpress and ``model.generate``)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=ChannelSparseLayer)

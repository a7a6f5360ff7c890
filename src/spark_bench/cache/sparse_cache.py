"""A transformers cache whose compressed layers hold SparK keys channel-sparse.

``ChannelSparseCache`` behaves as a ``DynamicCache`` until a SparK press stores a layer packed
(``ChannelSparseLayer.store``). From then on the layer holds the prefill's keys (and pruned
values) packed, plus the tokens generated after the prefill dense (``tail``): decoding appends
there. Each attention call rebuilds that one layer's dense keys on the fly and drops them
after use, so the whole cache is never materialised at once.

``layer.keys`` / ``layer.values`` stay readable and assignable for code written against
``DynamicLayer`` (kvpress's pipeline slices them to drop an answer): reading rebuilds dense,
assigning a tensor that starts with the packed prefill keeps the packing.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import Cache

from spark_bench.cache.packing import PackedKeys, PackedValues


def _prefix_then_tail(packed: PackedKeys | PackedValues, tail: torch.Tensor) -> torch.Tensor:
    """The rebuilt prefill followed by the dense tail, rebuilt straight into one buffer (a
    concatenation would copy the whole layer once more at every decoding step)."""
    batch, heads, length, dim = packed.shape()
    out = tail.new_empty((batch, heads, length + tail.shape[-2], dim))
    packed.unpack(out=out[:, :, :length])
    out[:, :, length:] = tail
    return out


class ChannelSparseLayer(DynamicLayer):
    """One layer: a packed prefill (keys, and values packed or dense) and a dense tail."""

    def __init__(self) -> None:
        self.packed_keys: PackedKeys | None = None
        self.prefix_values: PackedValues | torch.Tensor | None = None
        self.tail_keys: torch.Tensor | None = None
        self.tail_values: torch.Tensor | None = None
        super().__init__()

    @property
    def packed_length(self) -> int:
        return self.packed_keys.length if self.packed_keys is not None else 0

    def store(self, keys: PackedKeys, values: PackedValues | torch.Tensor) -> None:
        """Replace this layer's content with a packed prefill (values packed, or dense)."""
        self.packed_keys, self.prefix_values = keys, values
        self._empty_tails()

    def _empty_tails(self) -> None:
        # fresh tensors: an empty view would keep the whole dense prefill's storage alive
        self.tail_keys = self.tail_keys.new_empty((*self.tail_keys.shape[:2], 0, self.tail_keys.shape[-1]))
        self.tail_values = self.tail_values.new_empty(
            (*self.tail_values.shape[:2], 0, self.tail_values.shape[-1])
        )

    # -- DynamicLayer's interface ---------------------------------------------------------
    @property
    def keys(self) -> torch.Tensor | None:
        """Dense keys: the packed prefill rebuilt, then the tail."""
        if self.packed_keys is None:
            return self.tail_keys
        return _prefix_then_tail(self.packed_keys, self.tail_keys)

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        self.tail_keys = self._beyond_prefix(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        """Dense values: the prefill's (rebuilt if pruned), then the tail."""
        if self.packed_keys is None:
            return self.tail_values
        prefix = self.prefix_values
        if isinstance(prefix, PackedValues):
            return _prefix_then_tail(prefix, self.tail_values)
        return torch.cat([prefix, self.tail_values], dim=-2)

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
        self.packed_keys.crop(max_length)
        if isinstance(self.prefix_values, PackedValues):
            self.prefix_values.crop(max_length)
        else:
            self.prefix_values = self.prefix_values[:, :, :max_length]
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

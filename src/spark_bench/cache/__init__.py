"""The channel-sparse KV cache: SparK's memory saving, really held."""

from spark_bench.cache import cpu_kernel
from spark_bench.cache.packing import PackedKeys, PackedValues, pack_bits, unpack_bits
from spark_bench.cache.sparse_cache import ChannelSparseCache, ChannelSparseLayer

__all__ = [
    "ChannelSparseCache",
    "ChannelSparseLayer",
    "PackedKeys",
    "PackedValues",
    "cpu_kernel",
    "pack_bits",
    "unpack_bits",
]

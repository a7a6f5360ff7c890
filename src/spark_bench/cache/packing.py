"""Channel-sparse storage of SparK keys (and pruned values): what is kept, and how to rebuild.

Per token and KV head, a packed key row holds the ``T = D - floor(λD)`` kept values (in channel
order), which channels they are (a D-bit mask, or T one-byte indices when that is smaller),
one sign bit per channel (the kept channels' are redundant, see ``PackedKeys``) and ``a_t``
(the mean pruned saliency, in the key dtype); per KV head, the query statistic ``s``
(float32). Rebuilding gives exactly ``sparsify_keys``' keys:
kept entries unchanged, pruned entries ``sign · sqrt(a_t / s)`` (zero for ``recovery="none"``,
which stores neither signs nor ``a_t`` nor ``s``).

For D = 128 in bf16 at λ = 0.8: 26 x 2 + 16 + 16 + 2 = 86 bytes per token and head, not 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spark_bench.cache import cpu_kernel
from spark_bench.spark_math import (
    PACKABLE_RECOVERY,
    channel_mask,
    channel_saliency,
    inverse_sqrt_norm,
    kept_channels,
    mean_pruned_saliency,
    select_values,
)

_BIT_WEIGHTS = [1 << i for i in range(8)]
_BYTE_TABLES: dict[torch.device, torch.Tensor] = {}


def _byte_table(device: torch.device) -> torch.Tensor:
    """Byte -> its 8 bits as 0/1 bytes, each row stored as one int64: indexing 256 one-element
    rows is the fast path of ``index_select`` (4x faster than 8-byte rows on a CPU), and a
    table lookup beats shifting and masking on every decoding step."""
    if device not in _BYTE_TABLES:
        bits = ((torch.arange(256).unsqueeze(-1) >> torch.arange(8)) & 1).to(torch.uint8)
        _BYTE_TABLES[device] = bits.contiguous().view(torch.int64).squeeze(-1).to(device)
    return _BYTE_TABLES[device]


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Booleans [..., n] -> uint8 [..., ceil(n / 8)], little-endian within a byte."""
    n = bits.shape[-1]
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, -n % 8))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    return (padded.view(*bits.shape[:-1], padded.shape[-1] // 8, 8) * weights).sum(-1, dtype=torch.uint8)


def _expand_bytes(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., m] -> 0/1 uint8 [..., 8m], little-endian within a byte."""
    rows = _byte_table(packed.device).index_select(0, packed.reshape(-1).long())
    return rows.view(torch.uint8).view(*packed.shape[:-1], 8 * packed.shape[-1])


def _set_sign_bits(dense: torch.Tensor, sign_bits: torch.Tensor) -> None:
    """Set the sign bit of ``dense``'s entries [..., D] (floats of any width: IEEE formats keep
    the sign in the top bit) where ``sign_bits`` [..., ceil(D / 8)] has a set bit. An OR on a
    same-width integer view: 2-3x faster on a CPU than an OR into each entry's top byte, whose
    stride defeats vectorisation."""
    ints = dense.view(cpu_kernel.INT_OF_WIDTH[dense.element_size()])
    negative = _expand_bytes(sign_bits)[..., : dense.shape[-1]].to(ints.dtype)
    ints.bitwise_or_(negative.bitwise_left_shift_(8 * dense.element_size() - 1))


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 [..., m] -> booleans [..., n]: the inverse of ``pack_bits``."""
    return _expand_bytes(packed)[..., :n].bool()


@dataclass
class PackedRows:
    """A [b, h, t, D] tensor stored as kept values plus which channels they are."""

    kept: torch.Tensor  # [b, h, t, T] in the original dtype, channel order
    mask_bits: torch.Tensor | None  # [b, h, t, ceil(D / 8)] uint8, set bits = kept channels
    indices: torch.Tensor | None  # [b, h, t, T] uint8: used instead of the mask when smaller
    head_dim: int

    @classmethod
    def pack(
        cls, dense: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> PackedRows:
        """``dense`` [b, h, t, D] keeping, per row, the channels at ``positions`` (ascending);
        ``mask``, their boolean mask, when the caller has it already."""
        kept = dense.gather(-1, positions)
        dim, n_kept = dense.shape[-1], positions.shape[-1]
        if n_kept < math.ceil(dim / 8) and dim <= 256:
            return cls(kept, None, positions.to(torch.uint8), dim)
        return cls(kept, pack_bits(channel_mask(positions, dim) if mask is None else mask), None, dim)

    @property
    def length(self) -> int:
        return self.kept.shape[2]

    def empty_dense(self) -> torch.Tensor:
        """An uninitialised [b, h, t, D] tensor in the kept dtype."""
        return self.kept.new_empty((*self.kept.shape[:-1], self.head_dim))

    def merge(self, filled: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``filled`` (any dtype, broadcastable to the dense shape) with the kept values written
        at their channels, in the kept dtype, into ``out`` when given (a slice of a longer
        buffer: it spares the caller a copy)."""
        out = self.empty_dense() if out is None else out
        out.copy_(filled.expand(out.shape))  # the cast to the kept dtype rides on this copy
        return self.write_kept(out)

    def write_kept(self, out: torch.Tensor, sign_bits: torch.Tensor | None = None) -> torch.Tensor:
        """Overwrite ``out``'s kept channels with their values; first, when ``sign_bits`` is
        given, set the sign bit of ``out``'s entries where it has a set bit."""
        if self.mask_bits is not None and cpu_kernel.available(out) and cpu_kernel.rows_of_a_buffer(out):
            return cpu_kernel.merge_kept(out, self.kept, self.mask_bits, sign_bits)
        if sign_bits is not None:
            _set_sign_bits(out, sign_bits)
        if self.indices is not None:
            return out.scatter_(-1, self.indices.long(), self.kept)
        keep = _expand_bytes(self.mask_bits)[..., : self.head_dim].view(torch.bool)
        # Every token keeps exactly T channels and ``kept`` lists them in channel order, so the
        # mask's True entries, read in row-major order, meet the kept values in that order: one
        # pass, with no per-channel rank (cumsum) or gather.
        return out.masked_scatter_(keep, self.kept.contiguous())

    def crop(self, length: int) -> None:
        self.kept = self.kept[:, :, :length]
        if self.mask_bits is not None:
            self.mask_bits = self.mask_bits[:, :, :length]
        if self.indices is not None:
            self.indices = self.indices[:, :, :length]


class _PackedLayerPart:
    """What packed keys and packed values share: their rows' length and dense shape."""

    rows: PackedRows

    @property
    def length(self) -> int:
        return self.rows.length

    def shape(self) -> tuple[int, int, int, int]:
        return (*self.rows.kept.shape[:-1], self.rows.head_dim)


@dataclass
class PackedKeys(_PackedLayerPart):
    """SparK keys of one layer, channel-sparse (see the module docstring)."""

    rows: PackedRows
    # [b, h, t, ceil(D / 8)] uint8, set = negative; None for "none". Signs of all D channels,
    # not only the P pruned ones: a few bytes more per row (16 instead of 13 at D=128, λ=0.8)
    # spare the decoder a per-channel rank computation and gather at every step.
    sign_bits: torch.Tensor | None
    mean_saliency: torch.Tensor | None  # a_t [b, h, t, 1] in the key dtype; None for "none"
    inv_sqrt_norm: torch.Tensor | None  # 1 / sqrt(s) [b, h, 1, D] float32 (0 where s = 0); None for "none"
    n_pruned: int

    @classmethod
    def pack(cls, keys: torch.Tensor, queries: torch.Tensor, key_ratio: float, recovery: str) -> PackedKeys:
        """Pack what ``sparsify_keys(keys, queries, key_ratio, recovery)`` returns; ``recovery``
        is ``mean`` or ``none`` (the sampling variants need the pruned keys' order: stored dense)."""
        if recovery not in PACKABLE_RECOVERY:
            raise ValueError(
                f"recovery={recovery!r} cannot be stored channel-sparse; use one of {list(PACKABLE_RECOVERY)}"
            )
        dim = keys.shape[-1]
        n_pruned = math.floor(key_ratio * dim)
        s, saliency = channel_saliency(keys, queries)
        positions = kept_channels(saliency, dim - n_pruned)
        kept = channel_mask(positions, dim)
        rows = PackedRows.pack(keys, positions, kept)
        if recovery == "none":
            return cls(rows, None, None, None, n_pruned)
        a_t = mean_pruned_saliency(saliency, ~kept, keys.dtype).to(keys.dtype)
        return cls(rows, pack_bits(keys < 0), a_t, inverse_sqrt_norm(s), n_pruned)

    def unpack(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The dense keys ``sparsify_keys`` returns, rebuilt with a handful of passes over them
        (this runs for every layer at every decoding step), into ``out`` when given."""
        out = self.rows.empty_dense() if out is None else out
        if self.sign_bits is None:
            return self.rows.write_kept(out.zero_())
        # sqrt(a_t) · 1/sqrt(s) on every channel, computed in float32 and rounded to the key
        # dtype as it is stored: exactly sparsify_keys' recovered magnitude on the pruned ones.
        # It is never negative, so the sign is its sign bit, set by an OR; the kept channels
        # are overwritten after.
        torch.mul(self.mean_saliency.float().sqrt(), self.inv_sqrt_norm, out=out)
        return self.rows.write_kept(out, sign_bits=self.sign_bits)

    def crop(self, length: int) -> None:
        self.rows.crop(length)
        if self.sign_bits is not None:
            self.sign_bits = self.sign_bits[:, :, :length]
            self.mean_saliency = self.mean_saliency[:, :, :length]


@dataclass
class PackedValues(_PackedLayerPart):
    """Pruned values: kept values plus one fill per token (the signed mean of the pruned ones)."""

    rows: PackedRows
    fill: torch.Tensor  # [b, h, t, 1] in the value dtype

    @classmethod
    def pack(cls, values: torch.Tensor, value_ratio: float) -> PackedValues:
        """Pack what ``prune_values(values, value_ratio)`` returns."""
        kept, fill = select_values(values, value_ratio)
        return cls(PackedRows.pack(values, kept), fill.to(values.dtype))

    def unpack(self, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.rows.merge(self.fill, out)

    def crop(self, length: int) -> None:
        self.rows.crop(length)
        self.fill = self.fill[:, :, :length]

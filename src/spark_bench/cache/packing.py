"""Channel-sparse storage of SparK keys (and pruned values): what is kept, and how to rebuild.

Per token and KV head, a packed key row holds the ``T = D - floor(λD)`` kept values (in channel
order), which channels they are (a D-bit mask, or T one-byte indices when that is smaller),
one sign bit per pruned channel and ``a_t`` (the mean pruned saliency, in the key dtype); per
KV head, the query statistic ``s`` (float32). Rebuilding gives exactly ``sparsify_keys``' keys:
kept entries unchanged, pruned entries ``sign · sqrt(a_t / s)`` (zero for ``recovery="none"``,
which stores neither signs nor ``a_t`` nor ``s``).

For D = 128 in bf16 at λ = 0.8: 26 x 2 + 16 + 13 + 2 = 83 bytes per token and head, not 256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spark_bench.presses.spark import (
    mean_pruned_saliency,
    recovered_magnitude,
    select_channels,
    select_values,
)

_BIT_WEIGHTS = [1 << i for i in range(8)]


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Booleans [..., n] -> uint8 [..., ceil(n / 8)], little-endian within a byte."""
    n = bits.shape[-1]
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, -n % 8))
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=bits.device)
    return (padded.view(*bits.shape[:-1], -1, 8) * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 [..., m] -> booleans [..., n]: the inverse of ``pack_bits``."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.flatten(-2)[..., :n].bool()


def _ordered_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` True positions of each row of ``mask``, ascending."""
    return mask.to(torch.uint8).argsort(dim=-1, descending=True, stable=True)[..., :count]


@dataclass
class PackedRows:
    """A [b, h, t, D] tensor stored as kept values plus which channels they are."""

    kept: torch.Tensor  # [b, h, t, T] in the original dtype, channel order
    mask_bits: torch.Tensor | None  # [b, h, t, ceil(D / 8)] uint8, set bits = kept channels
    indices: torch.Tensor | None  # [b, h, t, T] uint8: used instead of the mask when smaller
    head_dim: int

    @classmethod
    def pack(cls, dense: torch.Tensor, keep: torch.Tensor, n_kept: int) -> PackedRows:
        positions = _ordered_positions(keep, n_kept)
        kept = dense.gather(-1, positions)
        dim = dense.shape[-1]
        if n_kept < math.ceil(dim / 8) and dim <= 256:
            return cls(kept, None, positions.to(torch.uint8), dim)
        return cls(kept, pack_bits(keep), None, dim)

    @property
    def length(self) -> int:
        return self.kept.shape[2]

    def keep_mask(self) -> torch.Tensor:
        if self.mask_bits is not None:
            return unpack_bits(self.mask_bits, self.head_dim)
        shape = (*self.kept.shape[:-1], self.head_dim)
        mask = torch.zeros(shape, dtype=torch.bool, device=self.kept.device)
        return mask.scatter_(-1, self.indices.long(), True)

    def scatter_into(self, out: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``out`` with the kept values written at their channels."""
        return out.masked_scatter(keep, self.kept.to(out.dtype))

    def crop(self, length: int) -> None:
        self.kept = self.kept[:, :, :length]
        if self.mask_bits is not None:
            self.mask_bits = self.mask_bits[:, :, :length]
        if self.indices is not None:
            self.indices = self.indices[:, :, :length]


@dataclass
class PackedKeys:
    """SparK keys of one layer, channel-sparse (see the module docstring)."""

    rows: PackedRows
    sign_bits: torch.Tensor | None  # [b, h, t, ceil(P / 8)] uint8, set = negative; None for "none"
    mean_saliency: torch.Tensor | None  # a_t [b, h, t, 1] in the key dtype; None for "none"
    channel_norm: torch.Tensor | None  # s [b, h, 1, D] float32; None for "none"
    n_pruned: int

    @classmethod
    def pack(cls, keys: torch.Tensor, queries: torch.Tensor, key_ratio: float, recovery: str) -> PackedKeys:
        """Pack what ``sparsify_keys(keys, queries, key_ratio, recovery)`` returns; ``recovery``
        is ``mean`` or ``none`` (the sampling variants need the pruned keys' order: stored dense)."""
        if recovery not in ("mean", "none"):
            raise ValueError(f"recovery={recovery!r} cannot be stored channel-sparse; use 'mean' or 'none'")
        dim = keys.shape[-1]
        n_pruned = math.floor(key_ratio * dim)
        s, saliency, pruned = select_channels(keys, queries, key_ratio)
        rows = PackedRows.pack(keys, ~pruned, dim - n_pruned)
        if recovery == "none":
            return cls(rows, None, None, None, n_pruned)
        pruned_keys = keys.gather(-1, _ordered_positions(pruned, n_pruned))
        a_t = mean_pruned_saliency(saliency, pruned, keys.dtype).to(keys.dtype)
        return cls(rows, pack_bits(pruned_keys < 0), a_t, s, n_pruned)

    @property
    def length(self) -> int:
        return self.rows.length

    def shape(self) -> tuple[int, int, int, int]:
        return (*self.rows.kept.shape[:-1], self.rows.head_dim)

    def unpack(self) -> torch.Tensor:
        keep = self.rows.keep_mask()
        dtype = self.rows.kept.dtype
        if self.sign_bits is None:
            return self.rows.scatter_into(torch.zeros(keep.shape, dtype=dtype, device=keep.device), keep)
        negative = torch.zeros_like(keep).masked_scatter(~keep, unpack_bits(self.sign_bits, self.n_pruned))
        signs = torch.where(negative, -1.0, 1.0)
        filled = (signs * recovered_magnitude(self.mean_saliency.float(), self.channel_norm)).to(dtype)
        return self.rows.scatter_into(filled, keep)

    def crop(self, length: int) -> None:
        self.rows.crop(length)
        if self.sign_bits is not None:
            self.sign_bits = self.sign_bits[:, :, :length]
            self.mean_saliency = self.mean_saliency[:, :, :length]


@dataclass
class PackedValues:
    """Pruned values: kept values plus one fill per token (the signed mean of the pruned ones)."""

    rows: PackedRows
    fill: torch.Tensor  # [b, h, t, 1] in the value dtype

    @classmethod
    def pack(cls, values: torch.Tensor, value_ratio: float) -> PackedValues:
        """Pack what ``prune_values(values, value_ratio)`` returns."""
        pruned, fill = select_values(values, value_ratio)
        n_kept = values.shape[-1] - math.floor(value_ratio * values.shape[-1])
        return cls(PackedRows.pack(values, ~pruned, n_kept), fill.to(values.dtype))

    @property
    def length(self) -> int:
        return self.rows.length

    def shape(self) -> tuple[int, int, int, int]:
        return (*self.rows.kept.shape[:-1], self.rows.head_dim)

    def unpack(self) -> torch.Tensor:
        keep = self.rows.keep_mask()
        return self.rows.scatter_into(self.fill.expand(keep.shape).clone(), keep)

    def crop(self, length: int) -> None:
        self.rows.crop(length)
        self.fill = self.fill[:, :, :length]

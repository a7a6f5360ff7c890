"""A compiled CPU kernel for the steps of rebuilding packed keys that torch runs slowly.

Writing each row's kept values at the channels its bitmask names is ``masked_scatter_``. On a
CPU, torch runs it on one thread and tests the mask entry by entry, and that step dominated
rebuilding a layer, enough to put decoding from the channel-sparse cache above its time target.
This kernel reads the mask 64 channels at a time, jumps from one set bit to the next (its work
is the kept entries, not all of them), sets the recovered entries' sign bits in the same pass
over a row, and splits the rows over threads. The measurements, before and after, are in
``benchmarks/README.md`` (``kv_memory.py``).

On CUDA, ``masked_scatter_`` is a parallel kernel already and stays; so do CPU tensors when
numba is not importable (``available`` says which).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the package importable
    numba = None

# Same-width integer views: the kernel moves bits, so every float dtype goes through it exactly.
INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
ROWS_PER_TASK = 256  # rows one thread handles at a time: enough work to pay for a task

# The index of a 64-bit word's lowest set bit: isolate it (w & -w), multiply by a de Bruijn
# sequence and read the top 6 bits (Leiserson, Prokop and Randall, "Using de Bruijn sequences
# to index a 1 in a computer word", 1998). numba has no count-trailing-zeros of its own.
_DE_BRUIJN = 0x03F79D71B4CA8B09
_BIT_OF_SLOT = np.zeros(64, dtype=np.int64)
for _bit in range(64):
    _BIT_OF_SLOT[(((1 << _bit) * _DE_BRUIJN) % (1 << 64)) >> 58] = _bit


def available(tensor: torch.Tensor) -> bool:
    """Whether ``merge_kept`` handles this tensor (a CPU tensor, with numba installed)."""
    return numba is not None and tensor.device.type == "cpu"


def _merge_kept_rows(
    out, kept, mask, signs, length, sign_shift, tasks_per_head, rows_per_task
):  # pragma: no cover
    """Per row t < ``length`` of ``out`` (integer views, which may hold more rows): set the top
    bit of every channel whose bit in ``signs`` is set (when ``signs`` has channels), then
    out[.., c] = kept[.., k] for the k-th set bit c of ``mask``. numba checks no bounds: a set
    bit past the row's D channels or past its T kept values is skipped, not written out of
    bounds. Compiled by ``_kernel``."""
    batch, heads, dim = out.shape[0], out.shape[1], out.shape[3]
    n_bytes, n_kept, with_signs = mask.shape[3], kept.shape[3], signs.shape[3] > 0
    for task in numba.prange(batch * heads * tasks_per_head):
        b = task // (heads * tasks_per_head)
        h = (task // tasks_per_head) % heads
        first = (task % tasks_per_head) * rows_per_task
        dense, packed, bits, negative = out[b, h], kept[b, h], mask[b, h], signs[b, h]
        for t in range(first, min(length, first + rows_per_task)):
            if with_signs:
                for c in range(dim):  # branch-free: the compiler vectorises it
                    dense[t, c] |= ((negative[t, c >> 3] >> (c & 7)) & 1) << sign_shift
            k = 0
            for start in range(0, n_bytes, 8):
                word = np.int64(0)
                for i in range(min(8, n_bytes - start)):
                    word |= np.int64(bits[t, start + i]) << (8 * i)
                while word != 0:
                    lowest = word & -word  # numba's integers wrap, as the de Bruijn product needs
                    channel = 8 * start + _BIT_OF_SLOT[((lowest * _DE_BRUIJN) >> 58) & 63]
                    if channel < dim and k < n_kept:
                        dense[t, channel] = packed[t, k]
                    k += 1
                    word ^= lowest


_KERNELS: dict[torch.dtype, Any] = {}


def _kernel(bits: torch.dtype) -> Any:
    """The kernel compiled for one integer width, once, for C-contiguous arrays (``_whole_rows``
    makes them so): left to itself numba compiles again for every mix of contiguous and strided
    arguments, possibly inside a timed step, and strided ('A') arrays for all would be slower at
    every call (the compiler cannot vectorise over an unknown stride)."""
    if bits not in _KERNELS:
        integer = numba.from_dtype(torch.empty((), dtype=bits).numpy().dtype)
        array = numba.types.Array(integer, 4, "C")
        mask = numba.types.Array(numba.types.uint8, 4, "C")
        count = numba.types.int64
        signature = numba.types.void(array, array, mask, mask, count, count, count, count)
        try:  # cached on disk: compiled once per machine, not once per process
            compiled = numba.njit([signature], parallel=True, nogil=True, cache=True)(_merge_kept_rows)
        except RuntimeError:  # no writable cache directory (a read-only install, no HOME)
            compiled = numba.njit([signature], parallel=True, nogil=True)(_merge_kept_rows)
        _KERNELS[bits] = compiled
    return _KERNELS[bits]


def merge_kept(
    out: torch.Tensor, kept: torch.Tensor, mask_bits: torch.Tensor, sign_bits: torch.Tensor | None = None
) -> torch.Tensor:
    """``out.masked_scatter_(mask, kept)`` for CPU tensors, where ``mask`` is ``mask_bits``
    ([b, h, t, ceil(D / 8)] uint8, little-endian) unpacked and every row of ``kept`` [b, h, t, T]
    lists its T values in channel order; first, when ``sign_bits`` (same layout as
    ``mask_bits``) is given, the sign bit of ``out``'s entries is set where it has a set bit.
    Each tensor [b, h, t, ·] is contiguous or the first t rows of a contiguous buffer (the front
    of a buffer that also holds the dense tail, a cropped cache)."""
    signs = mask_bits[..., :0] if sign_bits is None else sign_bits
    _check(out, kept, mask_bits, signs)
    bits = INT_OF_WIDTH[out.element_size()]
    # detach: a cache is read under no_grad, but a tensor that requires grad has no numpy view
    buffers = [
        _whole_rows(tensor)
        for tensor in (out.detach().view(bits), kept.detach().view(bits), mask_bits, signs)
    ]
    if any(buffer is None for buffer in buffers):
        raise ValueError(
            "merge_kept takes [b, h, t, ·] tensors that are the first t rows of a contiguous buffer"
        )
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    _kernel(bits)(
        *(buffer.numpy() for buffer in buffers),
        out.shape[2],
        8 * out.element_size() - 1,
        -(-out.shape[2] // ROWS_PER_TASK),
        ROWS_PER_TASK,
    )
    if torch.get_num_threads() != threads:
        # numba's OpenMP layer shares torch's runtime and sets its thread count when it starts
        torch.set_num_threads(threads)
    return out


def rows_of_a_buffer(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` [b, h, t, n] is contiguous, or the first t rows of a contiguous
    [b, h, T, n] buffer (T >= t): what ``merge_kept`` takes."""
    return _whole_rows(tensor) is not None


def _whole_rows(tensor: torch.Tensor) -> torch.Tensor | None:
    """A C-contiguous view of ``tensor`` [b, h, t, n], or of the [b, h, T, n] buffer (T >= t)
    whose first t rows it is (the kernel writes only the first t rows); None if it is neither."""
    if tensor.is_contiguous():
        return tensor
    batch, heads, length, width = tensor.shape
    stride = tensor.stride()
    if stride[3] != 1 or stride[2] != width or width == 0:
        return None
    # strides of size-1 dimensions say nothing: read T from the first dimension of size > 1
    outer = stride[1] if heads > 1 else stride[0]
    rows = outer // width
    end = tensor.storage_offset() + batch * heads * rows * width  # one past the buffer
    if (
        outer != rows * width
        or rows < length
        or (batch > 1 and heads > 1 and stride[0] != heads * stride[1])
        or end * tensor.element_size() > tensor.untyped_storage().nbytes()
    ):
        return None
    return tensor.as_strided((batch, heads, rows, width), (heads * rows * width, rows * width, width, 1))


def _check(out: torch.Tensor, kept: torch.Tensor, mask_bits: torch.Tensor, signs: torch.Tensor) -> None:
    """What the unchecked kernel relies on, where ``masked_scatter_`` would raise."""
    rows = out.shape[:3]
    if any(tensor.dim() != 4 for tensor in (out, kept, mask_bits, signs)):
        raise ValueError("merge_kept takes [b, h, t, ·] tensors")
    if kept.shape[:3] != rows or mask_bits.shape[:3] != rows or signs.shape[:3] != rows:
        raise ValueError(
            f"merge_kept: rows differ: out {tuple(rows)}, kept {tuple(kept.shape[:3])},"
            f" mask {tuple(mask_bits.shape[:3])}"
        )
    if kept.element_size() != out.element_size() or out.element_size() not in INT_OF_WIDTH:
        raise ValueError(f"merge_kept: out is {out.dtype} and kept {kept.dtype}; they must have one width")
    n_bytes = -(-out.shape[3] // 8)
    if mask_bits.dtype != torch.uint8 or mask_bits.shape[3] != n_bytes or signs.shape[3] not in (0, n_bytes):
        raise ValueError(
            f"merge_kept: masks must be uint8 with {n_bytes} bytes per row for {out.shape[3]} channels"
        )

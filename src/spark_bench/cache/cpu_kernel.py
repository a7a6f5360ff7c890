"""A compiled CPU kernel for the steps of rebuilding packed keys that torch runs slowly.

Writing each row's kept values at the channels its bitmask names is ``masked_scatter_``. On a
CPU, torch runs it on one thread and tests the mask entry by entry, about 2 ns per dense entry:
0.45 of the 0.52 ms that rebuilding one SmolLM2 layer (1k tokens) took, which alone put
decoding from the channel-sparse cache 1.2-1.4x above the dense cache. This kernel reads the
mask 64 channels at a time, jumps from one set bit to the next (its work is the kept entries,
not all of them), sets the recovered entries' sign bits in the same pass over a row, and splits
the rows over threads. Measured side by side on a 2-core CPU, one layer of 1k tokens rebuilds
in 0.16 ms instead of 0.52 (SmolLM2, fp32) and 0.8 ms instead of 3.8 (Llama-3.1-8B's geometry,
bf16); ``benchmarks/kv_memory.py`` shows the effect on decoding.

On CUDA, ``masked_scatter_`` is a parallel kernel already and stays; so do CPU tensors when
numba is not importable (``available`` says which).
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the package importable
    numba = None

# Same-width integer views: the kernel moves bits, so every float dtype goes through it exactly.
_BITS_OF = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
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


def _merge_kept_rows(out, kept, mask, signs, sign_shift, tasks_per_head, rows_per_task):  # pragma: no cover
    """Per row of ``out`` (integer views): set the top bit of every channel whose bit in
    ``signs`` is set (when ``signs`` has channels), then out[.., c] = kept[.., k] for the k-th
    set bit c of ``mask``. Compiled below; a plain function where numba is missing."""
    batch, heads, length, dim = out.shape
    n_bytes, with_signs = mask.shape[3], signs.shape[3] > 0
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
                    dense[t, channel] = packed[t, k]
                    k += 1
                    word ^= lowest


if numba is not None:
    # cache=True: compiled once per machine and dtype, not once per process
    _merge_kept_rows = numba.njit(parallel=True, nogil=True, cache=True)(_merge_kept_rows)


def merge_kept(
    out: torch.Tensor, kept: torch.Tensor, mask_bits: torch.Tensor, sign_bits: torch.Tensor | None = None
) -> torch.Tensor:
    """``out.masked_scatter_(mask, kept)`` for CPU tensors, where ``mask`` is ``mask_bits``
    ([b, h, t, ceil(D / 8)] uint8, little-endian) unpacked and every row of ``kept`` [b, h, t, T]
    lists its T values in channel order; first, when ``sign_bits`` (same layout as
    ``mask_bits``) is given, the sign bit of ``out``'s entries is set where it has a set bit.
    ``out`` [b, h, t, D] may be a strided view."""
    tensors = (out, kept, mask_bits) + ((sign_bits,) if sign_bits is not None else ())
    if out.dim() != 4 or any(tensor.stride(-1) != 1 for tensor in tensors):
        raise ValueError("merge_kept takes [b, h, t, ·] tensors whose last dimension is contiguous")
    bits = _BITS_OF[out.element_size()]
    signs = mask_bits[..., :0] if sign_bits is None else sign_bits
    length = out.shape[2]
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _merge_kept_rows(
        # detach: a cache is read under no_grad, but a tensor that requires grad has no numpy view
        out.detach().view(bits).numpy(),
        kept.detach().view(bits).numpy(),
        mask_bits.numpy(),
        signs.numpy(),
        8 * out.element_size() - 1,
        -(-length // ROWS_PER_TASK),
        ROWS_PER_TASK,
    )
    return out

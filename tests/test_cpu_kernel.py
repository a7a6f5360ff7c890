"""The compiled CPU merge writes exactly what ``masked_scatter_`` writes, for every layout the
cache hands it, and the cache rebuilds the same keys with or without it."""

from __future__ import annotations

import pytest
import torch

from spark_bench.cache import PackedKeys, PackedValues, cpu_kernel, pack_bits
from spark_bench.spark_math import channel_mask, prune_values, sparsify_keys


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns: equality of these also tells -0.0 from 0.0."""
    return tensor.view(cpu_kernel.INT_OF_WIDTH[tensor.element_size()])


def random_selection(shape: tuple[int, ...], head_dim: int, n_kept: int) -> torch.Tensor:
    """Kept channels, ascending, exactly ``n_kept`` per row; the first row keeps the highest
    channels so that the last bit of every 64-bit word is exercised."""
    positions = torch.rand(*shape, head_dim).argsort(-1)[..., :n_kept].sort(-1).values
    positions[(0,) * len(shape)] = torch.arange(head_dim - n_kept, head_dim)
    return positions


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize(("head_dim", "n_kept"), [(64, 13), (64, 64), (80, 17), (128, 26), (256, 128)])
@pytest.mark.parametrize("layout", ["contiguous", "slice_of_longer_buffer", "cropped"])
def test_merge_kept_equals_masked_scatter(dtype, head_dim, n_kept, layout):
    batch, heads, length = 2, 3, 600  # 600 rows per head: tasks of 256 rows, the last one short
    positions = random_selection((batch, heads, length), head_dim, n_kept)
    dense = torch.randn(batch, heads, length, head_dim).to(dtype)
    kept, mask_bits = dense.gather(-1, positions), pack_bits(channel_mask(positions, head_dim))
    fill = torch.randn(batch, heads, length, head_dim).to(dtype)
    if layout == "cropped":  # what ChannelSparseLayer.crop leaves: strided views
        length = 450
        kept, mask_bits, fill = kept[:, :, :length], mask_bits[:, :, :length], fill[:, :, :length]
    expected = fill.clone().masked_scatter_(channel_mask(positions[:, :, :length], head_dim), kept)

    buffer = torch.full((batch, heads, length + 7, head_dim), float("nan"), dtype=dtype)
    out = buffer[:, :, :length] if layout == "slice_of_longer_buffer" else fill.clone()
    out.copy_(fill)
    cpu_kernel.merge_kept(out, kept, mask_bits)
    assert torch.equal(bits(out), bits(expected))
    if layout == "slice_of_longer_buffer":
        assert buffer[:, :, length:].isnan().all()  # nothing written past the slice


def test_merge_kept_rejects_a_strided_channel_dimension():
    out = torch.zeros(1, 1, 4, 16)
    with pytest.raises(ValueError, match="first t rows of a contiguous buffer"):
        cpu_kernel.merge_kept(
            out[..., ::2], torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 1, dtype=torch.uint8)
        )


def test_available_only_for_cpu_tensors():
    assert cpu_kernel.available(torch.zeros(1))
    assert not cpu_kernel.available(torch.zeros(1, device="meta"))


@pytest.fixture(params=["kernel", "torch"])
def merge_path(request, monkeypatch):
    """Run a test with the compiled merge and again with torch's ``masked_scatter_``, the path
    CUDA tensors take."""
    if request.param == "torch":
        monkeypatch.setattr(cpu_kernel, "available", lambda tensor: False)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("recovery", ["mean", "none"])
def test_unpack_equals_sparsify_keys_bit_for_bit_on_both_paths(merge_path, dtype, head_dim, recovery):
    keys = torch.randn(1, 2, 300, head_dim).to(dtype)
    keys[0, 0, :, 5] = 0.0  # a zero key is positive: its sign bit must stay clear
    queries = torch.randn(1, 8, 32, head_dim).to(dtype)
    queries[..., 3] = 0.0  # a channel no query reads: s = 0, recovered to a signed zero
    packed = PackedKeys.pack(keys, queries, 0.8, recovery)
    assert torch.equal(bits(packed.unpack()), bits(sparsify_keys(keys, queries, 0.8, recovery)))


def test_pruned_values_equal_on_both_paths(merge_path):
    values = torch.randn(1, 2, 300, 128, dtype=torch.bfloat16)
    assert torch.equal(bits(PackedValues.pack(values, 0.5).unpack()), bits(prune_values(values, 0.5)))


def test_merge_kept_reads_tensors_that_require_grad():
    positions = random_selection((1, 1, 4), 16, 4)
    kept = torch.randn(1, 1, 4, 4, requires_grad=True)
    out = cpu_kernel.merge_kept(torch.zeros(1, 1, 4, 16), kept, pack_bits(channel_mask(positions, 16)))
    assert torch.equal(out.gather(-1, positions), kept.detach())


@pytest.mark.parametrize(("head_dim", "length"), [(100, 300), (64, 0)])
def test_unpack_into_a_slice_of_a_longer_buffer_on_both_paths(merge_path, head_dim, length):
    """The layout decoding uses: the rebuilt prefill is written into the front of a buffer
    that also holds the dense tail (head_dim 100: a mask whose last byte is partly padding)."""
    keys = torch.randn(1, 2, length, head_dim, dtype=torch.bfloat16)
    queries = torch.randn(1, 8, 16, head_dim, dtype=torch.bfloat16)
    packed = PackedKeys.pack(keys, queries, 0.8, "mean")
    buffer = torch.full((1, 2, length + 5, head_dim), float("nan"), dtype=torch.bfloat16)
    packed.unpack(out=buffer[:, :, :length])
    assert torch.equal(bits(buffer[:, :, :length]), bits(sparsify_keys(keys, queries, 0.8, "mean")))
    assert buffer[:, :, length:].isnan().all()


def test_merge_kept_rejects_what_the_unchecked_kernel_would_overrun():
    out, mask = torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="rows differ"):
        cpu_kernel.merge_kept(out, torch.zeros(1, 2, 3, 4), mask)
    with pytest.raises(ValueError, match="one width"):
        cpu_kernel.merge_kept(out, torch.zeros(1, 2, 4, 4, dtype=torch.float16), mask)
    with pytest.raises(ValueError, match="2 bytes per row for 16 channels"):
        cpu_kernel.merge_kept(out, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 1, dtype=torch.uint8))


def test_merge_kept_leaves_torchs_thread_count_as_it_was():
    # numba's OpenMP layer shares torch's runtime and would set the count when it starts
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        positions = random_selection((1, 1, 300), 64, 13)
        out = torch.zeros(1, 1, 300, 64)
        cpu_kernel.merge_kept(out, torch.randn(1, 1, 300, 13), pack_bits(channel_mask(positions, 64)))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_an_output_that_is_not_rows_of_a_buffer_takes_the_torch_path():
    keys = torch.randn(1, 2, 40, 64)
    queries = torch.randn(1, 4, 8, 64)
    packed = PackedKeys.pack(keys, queries, 0.8, "mean")
    out = torch.empty(1, 40, 2, 64).transpose(1, 2)  # heads interleaved with tokens
    assert not cpu_kernel.rows_of_a_buffer(out)
    assert torch.equal(bits(packed.unpack(out=out)), bits(sparsify_keys(keys, queries, 0.8, "mean")))

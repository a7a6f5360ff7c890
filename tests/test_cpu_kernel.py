"""The compiled CPU merge writes exactly what ``masked_scatter_`` writes, for every layout the
cache hands it, and the cache rebuilds the same keys with or without it."""

from __future__ import annotations

import pytest
import torch

from spark_bench.cache import PackedKeys, PackedValues, cpu_kernel, pack_bits
from spark_bench.presses.spark import channel_mask, prune_values, sparsify_keys

INT_OF_WIDTH = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns: equality of these also tells -0.0 from 0.0."""
    return tensor.view(INT_OF_WIDTH[tensor.element_size()])


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
    with pytest.raises(ValueError, match="last dimension is contiguous"):
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

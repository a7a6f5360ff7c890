"""SparK's functional core against the paper's definition and a plain-loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from spark_bench import spark_math
from spark_bench.spark_math import (
    ADAPTIVE_KEEP,
    adaptive_pruned_count,
    prune_values,
    pruned_mask,
    query_channel_norm,
    sparsify_keys,
)
from tests.reference.spark_reference import (
    EXAMPLE_GQA_QUERIES,
    EXAMPLE_KEYS,
    EXAMPLE_QUERIES,
    reference_prune_values,
    reference_sparsify,
)

T = torch.tensor


def close(actual: torch.Tensor, expected, dtype=torch.float32) -> None:
    tolerance = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1e-2, 1e-2)}[dtype]
    torch.testing.assert_close(
        actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=tolerance[0], atol=tolerance[1]
    )


def ramp(*shape: int) -> torch.Tensor:
    """Deterministic, sign-mixed, tie-free inputs (torchtune's fixed-init idea)."""
    n = math.prod(shape)
    return torch.sin(torch.arange(1, n + 1, dtype=torch.float64) * 0.7).float().view(shape) * 3


# Golden values: hand-computed, and printed by `python -m tests.reference.spark_reference`.
@pytest.mark.parametrize(
    ("ratio", "recovery", "expected"),
    [
        (0.5, "none", [0.0, -2.0, 0.0, 3.0]),
        (0.5, "mean", [math.sqrt(0.75), -2.0, math.sqrt(0.375), 3.0]),  # a_t = (1 + 0.5) / 2
        (0.75, "mean", [math.sqrt(11 / 6), -math.sqrt(11 / 6), math.sqrt(11 / 12), 3.0]),  # a_t = 5.5 / 3
        (0.75, "none", [0.0, 0.0, 0.0, 3.0]),
    ],
)
def test_golden_hand_example(ratio, recovery, expected):
    out = sparsify_keys(T(EXAMPLE_KEYS), T(EXAMPLE_QUERIES), ratio, recovery)
    close(out[0, 0, 0], expected)


def test_gqa_averages_signed_queries_and_guards_zero_norm():
    out = sparsify_keys(T(EXAMPLE_KEYS), T(EXAMPLE_GQA_QUERIES), 0.5, "mean")
    close(out[0, 0, 0], [1.0, 0.0, math.sqrt(0.125), 3.0])
    assert torch.isfinite(out).all()


def test_query_statistic_is_the_window_l2_norm_of_the_group_mean():
    queries = ramp(1, 4, 3, 8)  # 4 query heads over 2 KV heads, window 3
    expected = queries.view(1, 2, 2, 3, 8).mean(2).norm(dim=2)
    close(query_channel_norm(queries, 2), expected)


@pytest.mark.parametrize("recovery", ["none", "mean"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
def test_matches_the_plain_loop_reference(ratio, recovery):
    keys, queries = ramp(2, 2, 5, 8), ramp(2, 4, 3, 8).flip(-1)
    expected = reference_sparsify(keys.tolist(), queries.tolist(), ratio, recovery)
    close(sparsify_keys(keys, queries, ratio, recovery), expected)


@pytest.mark.parametrize(("ratio", "kept"), [(0.5, 64), (0.8, 26), (0.3, 90)])
def test_kept_channels_per_token(ratio, kept):
    keys = torch.randn(1, 2, 50, 128).sign() * (torch.rand(1, 2, 50, 128) + 0.1)  # no zeros
    out = sparsify_keys(keys, torch.randn(1, 4, 32, 128), ratio, "none")
    assert (out != 0).sum(-1).eq(kept).all()  # D - floor(λD): the paper's 64 and 26 for Llama


def test_recovery_none_zeros_exactly_the_pruned_entries():
    keys, queries = torch.randn(1, 2, 40, 16), torch.randn(1, 4, 8, 16)
    none = sparsify_keys(keys, queries, 0.5, "none")
    mean = sparsify_keys(keys, queries, 0.5, "mean")
    pruned = none == 0
    assert pruned.sum(-1).eq(8).all()
    assert torch.equal(none[~pruned], keys[~pruned]) and torch.equal(mean[~pruned], keys[~pruned])


def test_mean_recovery_restores_the_average_pruned_contribution_with_signs():
    keys, queries = torch.randn(2, 2, 30, 16), torch.randn(2, 4, 8, 16)
    out = sparsify_keys(keys, queries, 0.75, "mean")
    s = query_channel_norm(queries, 2).unsqueeze(2)
    pruned = sparsify_keys(keys, queries, 0.75, "none") == 0
    score = keys.pow(2) * s
    a_t = (score * pruned).sum(-1, keepdim=True) / pruned.sum(-1, keepdim=True)
    restored = out.pow(2) * s
    close(restored[pruned], a_t.expand_as(keys)[pruned])
    assert torch.equal(out.sign()[pruned], keys.sign()[pruned])


def test_ratio_below_one_channel_prunes_none():
    keys = torch.randn(1, 2, 10, 16)
    assert sparsify_keys(keys, torch.randn(1, 2, 4, 16), 0.06, "none") is keys  # floor(0.96) = 0


def test_ties_prune_the_lower_channel_first():
    keys = torch.ones(1, 1, 1, 4)  # equal saliency everywhere
    out = sparsify_keys(keys, torch.ones(1, 1, 1, 4), 0.5, "none")
    assert out.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("n_pruned", [0, 1, 5, 13, 15])
def test_the_selection_for_one_count_equals_the_full_ranking_under_many_ties(n_pruned):
    # saliencies on a coarse grid: ties at the threshold in most rows
    saliency = torch.randint(0, 4, (2, 3, 64, 16), generator=torch.Generator().manual_seed(0)).float()
    by_selection = pruned_mask(saliency, n_pruned)
    by_ranking = pruned_mask(saliency, torch.full((*saliency.shape[:-1], 1), n_pruned))  # stable argsort
    assert torch.equal(by_selection, by_ranking)
    assert (by_selection.sum(-1) == n_pruned).all()


def test_keeps_dtype_and_device_in_bf16():
    keys, queries = (
        torch.randn(1, 2, 20, 32, dtype=torch.bfloat16),
        torch.randn(1, 4, 8, 32, dtype=torch.bfloat16),
    )
    out = sparsify_keys(keys, queries, 0.5, "mean")
    assert out.dtype == torch.bfloat16 and out.shape == keys.shape
    expected = sparsify_keys(keys.float(), queries.float(), 0.5, "mean")
    close(out.float(), expected.to(torch.bfloat16).float(), torch.bfloat16)


@pytest.mark.parametrize("recovery", ["exponential", "normal"])
def test_sampling_recoveries_are_reproducible_under_a_seed(recovery):
    keys, queries = torch.randn(1, 2, 30, 16), torch.randn(1, 4, 8, 16)

    def run(seed: int) -> torch.Tensor:
        return sparsify_keys(keys, queries, 0.5, recovery, torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    out, none = run(3), sparsify_keys(keys, queries, 0.5, "none")
    pruned = none == 0
    assert torch.equal(out[~pruned], keys[~pruned])
    # no recovered contribution above the selection threshold (the weakest kept one), signs kept
    s = query_channel_norm(queries, 2).unsqueeze(2)
    saliency = keys.pow(2) * s
    threshold = saliency.masked_fill(pruned, math.inf).amin(-1, keepdim=True)
    assert (out.pow(2) * s <= threshold * (1 + 1e-5)).expand_as(out)[pruned].all()
    assert (out.sign()[pruned] * keys.sign()[pruned] >= 0).all()


@pytest.mark.parametrize("recovery", ["exponential", "normal"])
def test_sampling_recovery_replaces_draws_above_the_threshold_by_the_mean(monkeypatch, recovery):
    """As the reference's sampling modes: a draw above the selection threshold (the weakest kept
    channel's saliency) becomes ``a_t``; a draw below it is kept, even above ``a_t``."""
    saliency = T([8.0, 7, 6, 5, 4, 3, 2, 1])  # one token; λ=0.5 prunes 4, 3, 2, 1: a_t = 2.5
    keys = saliency.sqrt().view(1, 1, 1, 8)
    queries = torch.ones(1, 1, 1, 8)  # s = 1 on every channel: saliency = k²
    draws = T([10.0, 9, 8, 7, 6, 4.5, 3, 1]).view(1, 1, 1, 8)  # largest draw to the most salient
    monkeypatch.setitem(spark_math._SAMPLERS, recovery, lambda saliency, generator: draws)
    out = sparsify_keys(keys, queries, 0.5, recovery)
    close(out[0, 0, 0, 4:], T([2.5, 4.5, 3.0, 1.0]).sqrt())
    assert torch.equal(out[0, 0, 0, :4], keys[0, 0, 0, :4])


def test_adaptive_channel_counts_follow_the_buckets():
    dim = 10
    concentrated = torch.zeros(1, 1, 1, dim)
    concentrated[..., 0] = 100.0  # 99% of the mass in 1 channel (<= 0.2 D) -> keeps 0.1 D
    flat = torch.ones(1, 1, 1, dim)  # 99% needs all 10 channels (> 0.8 D) -> keeps 0.9 D
    counts = adaptive_pruned_count(torch.cat([concentrated, flat], dim=2)).flatten().tolist()
    assert counts == [dim - 1, dim - 9] == [dim - int(k * dim) for k in (ADAPTIVE_KEEP[0], ADAPTIVE_KEEP[-1])]
    out = sparsify_keys(torch.randn(1, 2, 30, 16), torch.randn(1, 2, 4, 16), 0.0, "none", adaptive=True)
    kept = (out != 0).sum(-1).unique().tolist()
    assert set(kept) <= {int(k * 16) for k in ADAPTIVE_KEEP}


def test_adaptive_buckets_round_as_the_reference():
    """The reference: p = the first (0-based) sorted position where the cumulative saliency exceeds
    99% of the total; bucket by ``p <= int(0.2 D)``, ...; keep ``int(k D)`` channels. At D = 128
    the bucket bounds are 25 / 51 / 76 / 102 and the keep counts 12 / 38 / 64 / 89 / 115."""
    dim = 128

    def token(leading: int) -> torch.Tensor:
        # ``leading`` channels of 1 and a little dust: the cumulative sum passes 99% at the last
        # leading channel, p = leading - 1
        return torch.cat([torch.ones(leading), torch.full((dim - leading,), 0.1 / (dim - leading))])

    p_values = [25, 26, 51, 52, 76, 77, 102, 103]
    saliency = torch.stack([token(p + 1) for p in p_values]).view(1, 1, len(p_values), dim)
    counts = adaptive_pruned_count(saliency).flatten().tolist()
    assert [dim - c for c in counts] == [12, 38, 38, 64, 64, 89, 89, 115]
    zero = adaptive_pruned_count(torch.zeros(1, 1, 1, dim)).item()  # no mass: the reference's p = 0
    assert dim - zero == 12


@pytest.mark.parametrize("value_ratio", [0.25, 0.5, 0.8])
def test_value_pruning_matches_the_plain_loop_reference(value_ratio):
    values = torch.randn(1, 2, 12, 16)
    expected = torch.tensor(
        reference_prune_values(values.double().tolist(), value_ratio), dtype=torch.float64
    )
    torch.testing.assert_close(prune_values(values, value_ratio).double(), expected, rtol=0, atol=1e-6)


def test_value_pruning_fills_the_signed_mean():
    values = torch.randn(1, 2, 20, 16)
    out = prune_values(values, 0.5)
    changed = out != values
    assert changed.sum(-1).le(8).all()
    for token in range(20):
        row, new = values[0, 0, token], out[0, 0, token]
        mask = new != row
        if mask.any():
            assert torch.allclose(new[mask], new[mask][0].expand(mask.sum()))
    assert prune_values(values, 0.0) is values


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.5, "banana"), "recovery='banana' is not one of"),
        ((1.0, "mean"), "key_ratio=1.0 is outside"),
        ((-0.1, "mean"), "key_ratio=-0.1 is outside"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        sparsify_keys(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 1, 4), *args)


def test_shape_errors():
    with pytest.raises(ValueError, match="not a multiple"):
        sparsify_keys(torch.randn(1, 2, 2, 4), torch.randn(1, 3, 1, 4), 0.5)
    with pytest.raises(ValueError, match="expected keys"):
        sparsify_keys(torch.randn(2, 2, 4), torch.randn(1, 2, 1, 4), 0.5)

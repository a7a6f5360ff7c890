"""SparK's mathematics on tensors (arXiv 2508.15212): saliency, channel selection, recovery and
value selection. The press (``presses.spark``) and the channel-sparse cache (``cache``) both build
on this module, which imports neither.

After a token press has chosen which tokens stay, SparK prunes, per token and KV head, the
``floor(λ·D)`` key channels whose saliency ``k² · s`` is lowest, where ``s`` is the L2 norm over
the observation window of the group-averaged (post-RoPE) queries; pruned entries are then
recovered so that attention scores keep most of their mass.

Deviations from the reference code (Xnhyacinth/SparK), each to follow the paper:
- ``recovery="none"`` zero-fills; the reference's default runs a grouped mean recovery that
  treats λ as a keep count.
- ``floor(λ·D) = 0`` prunes no channel; the reference's ``[-0:]`` slice prunes all.
- Prompts shorter than the window use the whole prompt; channels with ``s = 0`` recover to 0
  instead of inf/NaN. Window queries go through the model's query norm (Qwen3).
- The pruned set and the mean over it are the same ``floor(λ·D)`` channels: ties in saliency
  prune the lower channel index first (the reference mixes argsort and a strict ``<``).
- Sampling recoveries take a seeded generator and index per token correctly.

The variants the paper does not run follow the reference's arithmetic: the sampling recoveries
replace draws above the selection threshold by ``a_t`` (its "up" modes, which clamp to the
threshold, are not offered), and the adaptive channel count floors its bucket bounds and kept
counts (``int(x * D)``).
"""

from __future__ import annotations

import math

import torch

from spark_bench.checks import check_fraction

RECOVERY = ("none", "mean", "exponential", "normal")
# The recoveries a channel-sparse cache can store packed: the sampling ones need the pruned
# keys' order, so they are stored dense.
PACKABLE_RECOVERY = ("mean", "none")
# Adaptive channel count (the reference's variant): the sorted position where a token's
# cumulative saliency passes 99% picks its bucket; bucket upper bounds (fractions of D, floored)
# and the fraction of D each bucket keeps (floored), as the reference's ``int(x * D)``.
ADAPTIVE_MASS = 0.99
ADAPTIVE_BOUNDS = (0.2, 0.4, 0.6, 0.8)
ADAPTIVE_KEEP = (0.1, 0.3, 0.5, 0.7, 0.9)
# The channel index's bits under a score's in ``kept_channels``' sort key (head_dim < 65536).
_CHANNEL_BITS = 16
# Value pruning score of the reference: 0.7 x magnitude + 0.3 x normalised variance.
VALUE_MAGNITUDE_WEIGHT = 0.7


def check_key_pruning(key_ratio: float, recovery: str) -> None:
    check_fraction("key_ratio", key_ratio)
    if recovery not in RECOVERY:
        raise ValueError(f"recovery={recovery!r} is not one of {list(RECOVERY)}")


def query_channel_norm(queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``s[b, h, c]``: L2 norm over the window of the queries averaged over each KV head's group."""
    batch, q_heads, window, dim = queries.shape
    if q_heads % num_kv_heads:
        raise ValueError(f"{q_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    grouped = queries.float().view(batch, num_kv_heads, q_heads // num_kv_heads, window, dim).mean(2)
    return grouped.pow(2).sum(2).sqrt()


def kept_channels(score: torch.Tensor, n_kept: int) -> torch.Tensor:
    """Positions, ascending, of the ``n_kept`` highest-scoring channels of each token; among equal
    scores the higher index stays (the pruned take the lower first). ``score`` is >= 0, so its
    float32 bit patterns order like its values and ``bits << 16 | channel`` is a unique key: one
    top-k, exact under ties, at half the time of a stable argsort or a k-th value selection."""
    dim = score.shape[-1]
    channel = torch.arange(dim, device=score.device)
    key = (score.float().view(torch.int32).long() << _CHANNEL_BITS) | channel
    return key.topk(n_kept, dim=-1, sorted=False).indices.sort(dim=-1).values


def channel_mask(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Booleans [..., dim], True at ``positions`` [..., n]."""
    mask = torch.zeros((*positions.shape[:-1], dim), dtype=torch.bool, device=positions.device)
    return mask.scatter_(-1, positions, True)


def pruned_mask(saliency: torch.Tensor, n_pruned: torch.Tensor | int) -> torch.Tensor:
    """True on the ``n_pruned`` lowest-saliency channels of each token (ties: lower index first)."""
    if isinstance(n_pruned, int):
        return ~channel_mask(kept_channels(saliency, saliency.shape[-1] - n_pruned), saliency.shape[-1])
    order = saliency.argsort(dim=-1, stable=True)  # a count per token: rank every channel
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(saliency.shape[-1], device=order.device).expand_as(order))
    return ranks < n_pruned


def adaptive_pruned_count(saliency: torch.Tensor) -> torch.Tensor:
    """Per token, ``D - kept`` with ``kept`` from the 99%-cumulative-saliency buckets: [..., 1].

    As the reference: ``p`` is the first (0-based) position of the descending saliencies whose
    cumulative sum exceeds 99% of the total (0 for a token with no saliency, where the
    reference's argmax finds none); ``p <= int(0.2 D)`` keeps ``int(0.1 D)`` channels, and so on.
    """
    dim = saliency.shape[-1]
    ordered = saliency.sort(dim=-1, descending=True).values
    cumulative = ordered.cumsum(-1)
    # cumulative sums never fall, so the leading run at or under 99% ends where it is first passed
    point = (cumulative <= ADAPTIVE_MASS * cumulative[..., -1:]).sum(-1, keepdim=True)
    point = torch.where(point == dim, 0, point)
    bounds = torch.tensor([int(b * dim) for b in ADAPTIVE_BOUNDS], device=saliency.device)
    bucket = torch.bucketize(point, bounds)  # <= int(0.2D) -> 0, ..., > int(0.8D) -> 4
    pruned = torch.tensor([dim - int(k * dim) for k in ADAPTIVE_KEEP], device=saliency.device)
    return pruned[bucket]


def channel_saliency(keys: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The query statistic and saliency: ``s`` [b, h, 1, D] and the saliency ``k²·s`` (float32)."""
    s = query_channel_norm(queries, keys.shape[1]).unsqueeze(2)
    return s, keys.float().pow(2) * s


def select_channels(
    keys: torch.Tensor, queries: torch.Tensor, key_ratio: float, adaptive: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Statistic, saliency and selection: ``s`` [b, h, 1, D], saliency ``k²·s`` and the pruned
    mask (float32)."""
    s, saliency = channel_saliency(keys, queries)
    n_pruned = adaptive_pruned_count(saliency) if adaptive else math.floor(key_ratio * keys.shape[-1])
    return s, saliency, pruned_mask(saliency, n_pruned)


def mean_pruned_saliency(saliency: torch.Tensor, pruned: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a_t`` [..., 1]: the mean saliency of the token's pruned channels, rounded to the key dtype,
    the precision the channel-sparse cache stores it in (so both give identical keys)."""
    count = pruned.sum(-1, keepdim=True).clamp_min(1)
    return ((saliency * pruned).sum(-1, keepdim=True) / count).to(dtype).float()


def inverse_sqrt_norm(s: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(s)``, 0 where ``s = 0`` (a channel no window query reads recovers to 0)."""
    return torch.where(s > 0, s.clamp_min(torch.finfo(s.dtype).tiny).rsqrt(), 0.0)


def recovered_magnitude(target: torch.Tensor, inv_sqrt_s: torch.Tensor) -> torch.Tensor:
    """``sqrt(target / s)``, the magnitude whose ``k̂²·s`` equals ``target``, as
    ``sqrt(target) · (1 / sqrt(s))``: the cache rebuilds keys with exactly these operations."""
    return target.sqrt() * inv_sqrt_s


def key_signs(keys: torch.Tensor) -> torch.Tensor:
    """+1 / -1 per entry; a zero key counts as positive, so one bit per pruned channel stores it."""
    return torch.where(keys < 0, -1.0, 1.0)


def sparsify_keys(
    keys: torch.Tensor,
    queries: torch.Tensor,
    key_ratio: float,
    recovery: str = "mean",
    generator: torch.Generator | None = None,
    adaptive: bool = False,
) -> torch.Tensor:
    """SparK on one layer: keys ``[b, kv_heads, t, D]``, window queries ``[b, q_heads, w, D]``
    (post-RoPE). Returns a tensor shaped like ``keys`` whose pruned entries hold the recovered
    values (zeros for ``recovery="none"``). ``adaptive`` picks each token's channel count from
    its saliency (a variant of the reference code) instead of ``key_ratio``."""
    check_key_pruning(key_ratio, recovery)
    if keys.dim() != 4 or queries.dim() != 4 or keys.shape[-1] != queries.shape[-1]:
        raise ValueError(
            f"expected keys [b, h, t, D] and queries [b, q, w, D], got {keys.shape}, {queries.shape}"
        )
    if not adaptive and math.floor(key_ratio * keys.shape[-1]) == 0:
        return keys  # prune none (the reference prunes every channel here)
    s, saliency, pruned = select_channels(keys, queries, key_ratio, adaptive)
    k = keys.float()
    if recovery == "none":
        filled = torch.zeros_like(k)
    else:
        # the k̂²·s each pruned entry gets back
        if recovery == "mean":
            target = mean_pruned_saliency(saliency, pruned, keys.dtype)
        else:
            target = _sampled_target(saliency, pruned, recovery, generator)
        filled = key_signs(k) * recovered_magnitude(target, inverse_sqrt_norm(s))
    return torch.where(pruned, filled, k).to(keys.dtype)


def _draw_exponential(saliency: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """D draws per token from Exp(rate = 1 / mean saliency)."""
    mean = saliency.mean(-1, keepdim=True)
    return torch.empty_like(saliency).exponential_(1.0, generator=generator) * mean


def _draw_normal(saliency: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """D draws per token from |Normal(mean, std of the token's saliencies)|."""
    mean, std = saliency.mean(-1, keepdim=True), saliency.std(-1, keepdim=True)
    noise = torch.randn(saliency.shape, generator=generator, device=saliency.device)
    return (mean + std * noise).abs()


_SAMPLERS = {"exponential": _draw_exponential, "normal": _draw_normal}


def _sampled_target(
    saliency: torch.Tensor, pruned: torch.Tensor, recovery: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Sampling recovery: draws sorted descending, assigned by saliency rank; a draw above the
    selection threshold (the weakest kept channel's saliency) is replaced by ``a_t``, as the
    reference's sampling modes do (a draw between ``a_t`` and the threshold stays)."""
    samples = _SAMPLERS[recovery](saliency, generator).sort(dim=-1, descending=True).values
    rank = saliency.argsort(dim=-1, descending=True, stable=True)
    assigned = torch.empty_like(samples).scatter_(-1, rank, samples)
    threshold = saliency.masked_fill(pruned, math.inf).amin(-1, keepdim=True)
    mean = mean_pruned_saliency(saliency, pruned, torch.float32)
    return torch.where(assigned > threshold, mean, assigned)


def select_values(values: torch.Tensor, value_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept value channels of each token (positions, ascending) and the fill of the pruned
    ones: the lowest ``floor(ρ·D)`` by 0.7·|v| + 0.3·(normalised variance over tokens and
    channels) are pruned; fill = their signed mean."""
    n_pruned = math.floor(value_ratio * values.shape[-1])
    v = values.float()
    diversity = (v.var(dim=2, keepdim=True) + v.var(dim=3, keepdim=True)) / 2
    diversity = diversity / (diversity.amax(dim=(2, 3), keepdim=True) + 1e-8)
    score = VALUE_MAGNITUDE_WEIGHT * v.abs() + (1 - VALUE_MAGNITUDE_WEIGHT) * diversity
    kept = kept_channels(score, values.shape[-1] - n_pruned)
    pruned = ~channel_mask(kept, values.shape[-1])
    fill = ((v * pruned).sum(-1, keepdim=True) / max(n_pruned, 1)).to(values.dtype)
    return kept, fill


def prune_values(values: torch.Tensor, value_ratio: float) -> torch.Tensor:
    """Value pruning (a variant of the reference code, off in the paper): per token,
    ``floor(ρ·D)`` channels take the signed mean of the token's pruned values (see
    ``select_values``)."""
    if math.floor(value_ratio * values.shape[-1]) == 0:
        return values
    kept, fill = select_values(values, value_ratio)
    return torch.where(channel_mask(kept, values.shape[-1]), values, fill)

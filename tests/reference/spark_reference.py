"""A plain-loop SparK, written from docs/spark.md step by step (not from the SparK repository).

It is slow and obvious on purpose: the tests compare ``sparsify_keys`` with it, and
``python -m tests.reference.spark_reference`` prints the golden values used in
tests/presses/test_spark.py.
"""

from __future__ import annotations

import math


def reference_sparsify(keys, queries, key_ratio, recovery="mean"):
    """keys [b][h][t][D], queries [b][q][w][D] as nested lists; returns nested lists."""
    batch, kv_heads = len(keys), len(keys[0])
    q_heads, window, dim = len(queries[0]), len(queries[0][0]), len(queries[0][0][0])
    group = q_heads // kv_heads
    n_pruned = math.floor(key_ratio * dim)
    out = []
    for b in range(batch):
        out_heads = []
        for h in range(kv_heads):
            # steps 2-3: average the group's signed queries, then the L2 norm over the window
            s = []
            for c in range(dim):
                total = 0.0
                for i in range(window):
                    mean_q = sum(queries[b][h * group + g][i][c] for g in range(group)) / group
                    total += mean_q * mean_q
                s.append(math.sqrt(total))
            out_tokens = []
            for token in keys[b][h]:
                scores = [token[c] ** 2 * s[c] for c in range(dim)]  # step 4
                # step 5: the n_pruned lowest, ties to the lower channel index
                pruned = sorted(range(dim), key=lambda c: (scores[c], c))[:n_pruned]
                new = list(token)
                if pruned:
                    a_t = sum(scores[c] for c in pruned) / len(pruned)  # step 6
                    for c in pruned:
                        if recovery == "none" or s[c] == 0:
                            new[c] = 0.0
                        else:
                            sign = -1 if token[c] < 0 else 1  # a zero key counts as positive
                            new[c] = sign * math.sqrt(a_t / s[c])
                out_tokens.append(new)
            out_heads.append(out_tokens)
        out.append(out_heads)
    return out


# The hand-sized example of the golden tests: one KV head, D = 4, a window of one query.
EXAMPLE_KEYS = [[[[1.0, -2.0, 0.5, 3.0]]]]
EXAMPLE_QUERIES = [[[[1.0, 1.0, 2.0, 0.5]]]]
# Two query heads sharing the KV head; their signed mean is zero in channel 1 (s = 0 there).
EXAMPLE_GQA_QUERIES = [[[[1.0, 1.0, 2.0, 0.5]], [[1.0, -1.0, 2.0, 0.5]]]]

if __name__ == "__main__":
    for ratio in (0.5, 0.75):
        for recovery in ("none", "mean"):
            print(ratio, recovery, reference_sparsify(EXAMPLE_KEYS, EXAMPLE_QUERIES, ratio, recovery))
    print("gqa 0.5 mean", reference_sparsify(EXAMPLE_KEYS, EXAMPLE_GQA_QUERIES, 0.5, "mean"))


VALUE_MAGNITUDE_WEIGHT = 0.7  # docs/spark.md, value pruning: 0.7 magnitude, 0.3 normalised variance


def _variance(xs):
    """Unbiased sample variance (n - 1), as torch.var."""
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def reference_prune_values(values, value_ratio):
    """values [b][h][t][D] as nested lists; per token the floor(ρ·D) channels of lowest
    0.7·|v| + 0.3·diversity take the signed mean of those channels' values, where diversity is
    the mean of the channel's variance over tokens and the token's variance over channels,
    divided by its maximum over the head. Ties prune the lower channel first."""
    dim = len(values[0][0][0])
    n_pruned = math.floor(value_ratio * dim)
    out = []
    for heads in values:
        out_heads = []
        for tokens in heads:
            over_tokens = [_variance([token[c] for token in tokens]) for c in range(dim)]
            over_channels = [_variance(token) for token in tokens]
            diversity = [
                [(over_tokens[c] + over_channels[t]) / 2 for c in range(dim)] for t in range(len(tokens))
            ]
            top = max(max(row) for row in diversity)
            new_tokens = []
            for t, token in enumerate(tokens):
                scores = [
                    VALUE_MAGNITUDE_WEIGHT * abs(token[c])
                    + (1 - VALUE_MAGNITUDE_WEIGHT) * diversity[t][c] / (top + 1e-8)
                    for c in range(dim)
                ]
                pruned = sorted(range(dim), key=lambda c: (scores[c], c))[:n_pruned]
                fill = sum(token[c] for c in pruned) / n_pruned if pruned else 0.0
                new_tokens.append([fill if c in pruned else token[c] for c in range(dim)])
            out_heads.append(new_tokens)
        out.append(out_heads)
    return out

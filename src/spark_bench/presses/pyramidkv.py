"""PyramidKV (arXiv 2406.02069) with the PyramidKV authors' per-layer budgets, past the prefill.

The schedule (``layer_budgets``) follows the authors' code (KVCache-Factory,
``PyramidKVCluster.update_kv``): every layer keeps the observation window whole, and only the rest
of the budget spreads over the layers as an arithmetic sequence, the bottom layer keeping most.
kvpress 0.5.5's ``PyramidKVPress`` differs in three ways that change results, so this press
replaces its schedule: (1) its pyramid includes the window, so at small budgets the top layers
keep fewer tokens than the window and lose the end of the question (at 128 tokens, window 32,
32 layers: 30, 22, 14 and 6 tokens in the top four); (2) it falls back to a uniform budget
whenever the smallest layer budget would be below the window; (3) it crashes on the first forward
pass after prefill, because layers then hold different numbers of tokens and transformers 5.2
sizes one causal mask from layer 0. This press switches the model to ``sdpa_per_layer``
(``spark_bench.attention``) when applied, and the model keeps it for decoding from the
compressed cache (the runner puts a reused model back on its configured attention).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvpress import PyramidKVPress as KvpressPyramidKV
from kvpress.utils import compute_n_kept

from spark_bench.attention import NAME as PER_LAYER_ATTENTION
from spark_bench.checks import check_positive_int

# The pyramid's steepness: the top layer keeps 1/BETA of the mean (KVCache-Factory's default,
# which its LongBench scripts keep).
BETA = 20


def layer_budgets(
    budget: int, num_layers: int, window: int, context_tokens: int, beta: int = BETA
) -> list[int]:
    """Tokens each layer keeps (observation window included), bottom layer first.

    With ``B = budget``, ``W = window`` and ``R = B - W``, as KVCache-Factory's PyramidKV:

    - a context of fewer than ``B`` tokens is kept whole;
    - a context shorter than ``2R`` tokens keeps ``B`` in every layer (too short for a pyramid);
    - otherwise each layer keeps the window plus ``r_l`` earlier tokens, ``r_l`` falling
      arithmetically from ``max = 2R - R // beta`` at the bottom to ``min = R // beta`` at the top;
      where ``max`` exceeds the ``context_tokens - W`` tokens there are, the bottom layer keeps
      them all and ``min = 2R - max``. ``max + min = 2R``, so the layers keep ``R`` on average.

    One deviation, on purpose: KVCache-Factory floors the step, ``(max - min) // (L - 1)``, so its
    top layers keep more than the sequence says and the total overshoots the budget (at 128
    tokens, window 32, 32 layers: 142.5 tokens per layer on average instead of 128). Here the
    sequence is exact and the layers keep ``L · B`` tokens in all: each ``r_l`` is rounded down
    and the tokens left over go one each to the layers with the largest fractional parts (the
    lower layer on ties), so every layer is within one token of the exact sequence and budgets
    never rise with depth. A budget no larger than the window cannot hold it: every layer keeps
    ``budget`` tokens then.
    """
    for name, value in (("budget", budget), ("num_layers", num_layers), ("window", window), ("beta", beta)):
        check_positive_int(name, value)
    if context_tokens < budget:
        return [context_tokens] * num_layers
    rest = budget - window
    if rest <= 0 or context_tokens < 2 * rest or num_layers == 1:
        return [budget] * num_layers
    smallest = rest // beta
    largest = 2 * rest - smallest
    if largest >= context_tokens - window:
        largest = context_tokens - window
        smallest = 2 * rest - largest
    # r_l = largest - l * (largest - smallest) / (L - 1), in units of 1 / (L - 1) to stay exact.
    steps = num_layers - 1
    scaled = [largest * steps - layer * (largest - smallest) for layer in range(num_layers)]
    kept = [value // steps for value in scaled]
    left_over = rest * num_layers - sum(kept)
    by_fraction = sorted(range(num_layers), key=lambda layer: (-(scaled[layer] % steps), layer))
    for layer in by_fraction[:left_over]:
        kept[layer] += 1
    return [window + tokens for tokens in kept]


@dataclass
class PyramidKVPress(KvpressPyramidKV):
    """PyramidKV: SnapKV scores, per-layer budgets from ``layer_budgets``. Fields as kvpress's:
    compression_ratio (the budget is the tokens SnapKV would keep at this ratio), window_size
    (observation window, kept whole in every layer), kernel_size, beta (steepness)."""

    beta: int = BETA

    def get_layer_budget(self, module, q_len: int) -> int:
        budget = compute_n_kept(q_len, self.compression_ratio)
        layers = module.config.num_hidden_layers
        return layer_budgets(budget, layers, self.window_size, q_len, self.beta)[module.layer_idx]

    def post_init_from_model(self, model):
        # Called by BasePress.__call__ and forwarded by ComposedPress, so compositions switch too.
        super().post_init_from_model(model)
        use_per_layer_attention(model)


def use_per_layer_attention(model) -> None:
    """Switch an sdpa/eager model to per-layer causal masks (eager presses keep eager)."""
    if model.config._attn_implementation not in (PER_LAYER_ATTENTION, "eager"):
        model.set_attn_implementation(PER_LAYER_ATTENTION)

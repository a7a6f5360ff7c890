"""PyramidKV (arXiv 2406.02069) that runs past the prefill.

PyramidKV's schedule: per-layer budgets form an arithmetic sequence falling from the first to
the last layer, the last layer keeping ``1/beta`` of the mean budget, the mean being the token
budget (``(1 - compression_ratio) · q_len``), so the total is honoured. kvpress 0.5.5 computes
this sequence too, but (1) falls back to a uniform budget whenever the smallest layer budget
would be below the observation window, which with ``beta = 20`` is every budget under
``20 × window`` (all the paper's LongBench budgets with a 32-token window), and (2) crashes on the
first forward pass after prefill, because layers then hold different numbers of tokens and
transformers 5.2 sizes one causal mask from layer 0. Here the schedule always applies, and the
press switches the model to ``sdpa_per_layer`` (``spark_bench.attention``) when applied; the
model keeps that implementation, which decoding from the compressed cache needs.

The SparK reference's PyramidKV keeps ~90% of the tokens at budgets <= 1024 (SPARK.md 9).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvpress import PyramidKVPress as KvpressPyramidKV

from spark_bench.attention import NAME as PER_LAYER_ATTENTION


@dataclass
class PyramidKVPress(KvpressPyramidKV):
    """PyramidKV with per-layer causal masks. Fields as kvpress's: compression_ratio,
    window_size (observation window; the pyramid's floor), kernel_size, beta (steepness)."""

    def get_layer_budget(self, module, q_len: int) -> int:
        budget = q_len * (1 - self.compression_ratio)
        layers = module.config.num_hidden_layers
        smallest = budget / self.beta
        largest = 2 * budget - smallest
        if largest > q_len:  # the first layers cannot keep more than everything
            largest = q_len
            smallest = 2 * budget - largest
        step = (largest - smallest) / (layers - 1) if layers > 1 else 0.0
        return max(1, min(q_len, round(largest - module.layer_idx * step)))

    def post_init_from_model(self, model):
        # Called by BasePress.__call__ and forwarded by ComposedPress, so compositions switch too.
        super().post_init_from_model(model)
        use_per_layer_attention(model)


def use_per_layer_attention(model) -> None:
    """Switch an sdpa/eager model to per-layer causal masks (eager presses keep eager)."""
    if model.config._attn_implementation not in (PER_LAYER_ATTENTION, "eager"):
        model.set_attn_implementation(PER_LAYER_ATTENTION)

"""What SparK costs at prefill over its token press: snap_spark vs snapkv, side by side.

    python benchmarks/prefill_cost.py                      # both models, median of 7-21
    python benchmarks/prefill_cost.py --quick --json out.json

The prefill exactly as the runner does it (``model.model`` under the press, into a
``ChannelSparseCache``: SparK's channel selection and its packing into the cache are both
timed), on random tokens at 1k / 4k / 8k context, SnapKV keeping half of them and SparK pruning
λ = 0.8 of the kept keys' channels. The two presses take turns within each repetition.

Models: the paper's Llama-3.1-8B attention geometry (head_dim 128, bf16; 2 layers with a small
MLP, so attention is a far larger share of the work than in the real 8B model, which makes
SparK's relative cost look larger, not smaller) and, in full mode, the embedded SmolLM2-135M.
``spark_prefill_ratio_<n>k`` (the figures the targets read) are the geometry's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from spark_bench.benchmarking import (
    LLAMA_GEOMETRY,
    argument_parser,
    embedded_model_spec,
    interleaved_times,
    paired_ratio,
    prefill,
    press_for,
    random_ids,
    write_figures,
)
from spark_bench.cache import ChannelSparseCache
from spark_bench.models import LoadedModel, load_model

LENGTHS = (1024, 4096, 8192)
# Repetitions per length: a short prefill is cheap to repeat and, lasting a fraction of a
# second, the noisiest (one 1k ratio moved 0.97-1.09 between quick runs with 3 repetitions)
REPEATS = {"quick": {1024: 9, 4096: 5, 8192: 3}, "full": {1024: 21, 4096: 11, 8192: 7}}
COMPRESSION_RATIO = 0.5
KEY_RATIO = 0.8


def prefill_fn(loaded: LoadedModel, press, ids: torch.Tensor) -> Callable[[], None]:
    """One prefill into a fresh cache, as the runner does it."""
    return lambda: prefill(loaded.model, press, ids, ChannelSparseCache())


def measure(loaded: LoadedModel, repeats: dict[int, int]) -> dict[int, tuple[float, float, float]]:
    """Per context length: median prefill seconds under snapkv and under snap_spark, and the
    median of their per-repetition ratio."""
    snapkv = press_for("snapkv", COMPRESSION_RATIO)
    spark = press_for("snap_spark", COMPRESSION_RATIO, KEY_RATIO)
    out = {}
    for index, length in enumerate(LENGTHS):
        ids = random_ids(loaded.model.config.vocab_size, length, loaded.device)
        snapkv_s, spark_s = interleaved_times(
            [prefill_fn(loaded, snapkv, ids), prefill_fn(loaded, spark, ids)],
            repeats[length],
            loaded.device,
            warmup=index == 0,  # lazy initialisation happens once, not per length
        )
        out[length] = (
            statistics.median(snapkv_s),
            statistics.median(spark_s),
            paired_ratio(spark_s, snapkv_s),
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser("prefill cost of snap_spark over snapkv").parse_args(argv)
    repeats = REPEATS["quick" if args.quick else "full"]
    models = {"llama-geometry": LLAMA_GEOMETRY}
    if not args.quick:
        models["smollm2-135m"] = embedded_model_spec()
    figures: dict[str, float | int | bool] = {
        f"prefill_repeats_{length // 1024}k": count for length, count in repeats.items()
    }
    print(
        f"Prefill seconds, snapkv keeping {1 - COMPRESSION_RATIO:.0%} vs snap_spark λ={KEY_RATIO},"
        f" median of {', '.join(f'{count} at {length // 1024}k' for length, count in repeats.items())}"
    )
    print(f"{'model':<18}{'tokens':>8}{'snapkv s':>11}{'snap_spark s':>14}{'ratio':>8}")
    for model_name, spec in models.items():
        loaded = load_model(spec)
        for length, (snapkv_s, spark_s, ratio) in measure(loaded, repeats).items():
            print(f"{model_name:<18}{length:>8}{snapkv_s:>11.3f}{spark_s:>14.3f}{ratio:>8.3f}")
            suffix = f"{length // 1024}k" + ("" if model_name == "llama-geometry" else f"_{model_name}")
            figures[f"spark_prefill_ratio_{suffix}"] = round(ratio, 4)
            figures[f"snapkv_prefill_s_{suffix}"] = round(snapkv_s, 4)
        del loaded
    growth = figures["spark_prefill_ratio_8k"] / figures["spark_prefill_ratio_1k"]
    print(f"ratio growth 1k -> 8k (geometry): {growth:.3f} (must not grow: <= 1.10)")
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()

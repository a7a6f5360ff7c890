"""KV memory the cache really holds, and what decoding from it costs, measured side by side.

    python benchmarks/kv_memory.py            # full: 2k-token contexts
    python benchmarks/kv_memory.py --quick    # CI-sized
    python benchmarks/kv_memory.py --json out.json

1. Bytes: the paper's Llama-3.1-8B attention geometry (32 query / 8 KV heads, head_dim 128,
   bfloat16; randomly initialised, 2 layers and a small MLP so it runs on a CPU) and
   the embedded SmolLM2 (head_dim 64, float32). Per press: K+V bytes per kept token per KV head
   as ``memory.cache_bytes`` measures them after prefill, and the ratio to snapkv's.
2. Decode: the embedded model at a 2k-token context under snap_spark (λ=0.8), time per decoded
   token with the channel-sparse cache vs the dense cache holding the same recovered keys,
   medians over repetitions; and the peak memory of decoding with each (what the cache holds
   plus the most decoding allocates on top), from CUDA's allocator or, on a CPU, from the
   profiler's allocation events.
"""

from __future__ import annotations

import statistics

import torch
from transformers import DynamicCache

from spark_bench import memory
from spark_bench.benchmarking import (
    LLAMA_GEOMETRY,
    argument_parser,
    embedded_model_spec,
    greedy_steps,
    interleaved_times,
    paired_ratio,
    prefill,
    press_for,
    random_ids,
    write_figures,
)
from spark_bench.cache import ChannelSparseCache
from spark_bench.models import LoadedModel, load_model

PRESSES = [
    ("snapkv", None),
    ("snap_think", 0.5),
    ("snap_think", 0.8),
    ("snap_spark", 0.5),
    ("snap_spark", 0.8),
]
COMPRESSION_RATIO = 0.5  # the token press keeps half the context for every row alike


def bytes_per_token_head(loaded: LoadedModel, press, ids: torch.Tensor) -> float:
    cache = ChannelSparseCache()
    prefill(loaded.model, press, ids, cache)
    config = loaded.model.config
    kept = cache.get_seq_length()
    return memory.cache_bytes(cache) / (config.num_hidden_layers * config.num_key_value_heads * kept)


@torch.inference_mode()
def decode_costs(
    loaded: LoadedModel, press, ids: torch.Tensor, cache_classes: tuple[type, ...], steps: int, repeats: int
) -> list[tuple[list[float], int | None]]:
    """Per cache class: the time per greedy step from a compressed prefill, per repetition, and
    the peak memory of decoding: the most tensor bytes held at any moment while decoding (the
    cache, the keys it rebuilds, activations; the model's weights are not counted), measured
    by the device's allocator in a separate, untimed run. Each cache is prefilled once; every
    repetition crops it back to the prefill (as the engine does between questions) and decodes
    again, the classes taking turns (``interleaved_times``) after an untimed warm-up round."""
    device = loaded.model.device
    caches = []
    for cache_class in cache_classes:
        cache = cache_class()
        prefill(loaded.model, press, ids, cache)
        caches.append((cache, [layer.get_seq_length() for layer in cache.layers]))

    def decode_from_prefill(cache, lengths) -> None:
        for layer, length in zip(cache.layers, lengths, strict=True):
            layer.crop(length)  # back to the prefill: a slice, microseconds beside the steps
        greedy_steps(loaded.model, cache, ids, steps)

    seconds = interleaved_times(
        [
            lambda cache=cache, lengths=lengths: decode_from_prefill(cache, lengths)
            for cache, lengths in caches
        ],
        repeats,
        device,
    )
    times = [[total / steps for total in per_cache] for per_cache in seconds]
    peaks: list[int | None] = []
    for cache_class in cache_classes:  # a fresh cache, so the allocator sees all it holds
        cache = cache_class()
        measured = memory.peak_tensor_bytes(
            lambda cache=cache: prefill(loaded.model, press, ids, cache),
            lambda cache=cache: greedy_steps(loaded.model, cache, ids, steps),
            device,
        )
        peaks.append(None if measured is None else measured[1])
    return list(zip(times, peaks, strict=True))


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser("KV bytes and decode cost of the channel-sparse cache").parse_args(argv)
    context = 512 if args.quick else 2048
    steps, repeats = (16, 9) if args.quick else (32, 11)
    torch.manual_seed(0)
    figures: dict[str, float | int | str | None] = {"context_tokens": context, "quick": args.quick}

    print(
        f"K+V bytes per kept token per KV head, token press keeping {1 - COMPRESSION_RATIO:.0%} of {context}"
    )
    print(f"{'model':<22}{'press':<20}{'bytes':>10}{'vs snapkv':>12}")
    models = {"llama-geometry": load_model(LLAMA_GEOMETRY), "smollm2-135m": load_model(embedded_model_spec())}
    for model_name, loaded in models.items():
        ids = random_ids(loaded.model.config.vocab_size, context, loaded.device)
        baseline = None
        for press_name, key_ratio in PRESSES:
            per_token = bytes_per_token_head(loaded, press_for(press_name, COMPRESSION_RATIO, key_ratio), ids)
            baseline = baseline or per_token
            label = press_name if key_ratio is None else f"{press_name} λ={key_ratio}"
            print(f"{model_name:<22}{label:<20}{per_token:>10.1f}{per_token / baseline:>12.3f}")
            if model_name == "llama-geometry" and press_name == "snap_spark":
                figures[f"kv_ratio_snap_spark_{key_ratio}"] = round(per_token / baseline, 4)
                figures[f"kv_bytes_per_token_head_snap_spark_{key_ratio}"] = round(per_token, 2)
            if model_name == "llama-geometry" and press_name == "snapkv":
                figures["kv_bytes_per_token_head_snapkv"] = round(per_token, 2)

    loaded = models["smollm2-135m"]
    decode_context = 2048
    ids = random_ids(loaded.model.config.vocab_size, decode_context, loaded.device)
    press = press_for("snap_spark", COMPRESSION_RATIO, 0.8)
    (dense_times, dense_peak), (sparse_times, sparse_peak) = decode_costs(
        loaded, press, ids, (DynamicCache, ChannelSparseCache), steps, repeats
    )
    dense_s, sparse_s = statistics.median(dense_times), statistics.median(sparse_times)
    ratio = paired_ratio(sparse_times, dense_times)
    figures |= {
        "decode_s_per_token_dense": round(dense_s, 5),
        "decode_s_per_token_sparse": round(sparse_s, 5),
        "decode_ratio_sparse_vs_dense": round(ratio, 4),
        "decode_peak_bytes_dense": dense_peak,
        "decode_peak_bytes_sparse": sparse_peak,
        "decode_peak_ratio_sparse_vs_dense": None
        if dense_peak is None
        else round(sparse_peak / dense_peak, 4),
        "device": str(loaded.model.device),
    }
    print(f"\nDecode, smollm2-135m, snap_spark λ=0.8, {decode_context}-token context, median of {repeats}:")
    print(f"  dense cache   {1 / dense_s:8.1f} tokens/s")
    print(f"  sparse cache  {1 / sparse_s:8.1f} tokens/s   ratio (time per token) {ratio:.3f}")
    if dense_peak is not None:
        print(
            f"  peak memory while decoding ({loaded.model.device.type} tensors beside the weights):"
            f" dense {dense_peak / 2**20:.1f} MiB, sparse {sparse_peak / 2**20:.1f} MiB,"
            f" ratio {sparse_peak / dense_peak:.3f}"
        )
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()

"""Prefill time, decode time and KV bytes against context length, per press: a table and a plot.

    python benchmarks/scaling.py                        # 1k-8k tokens, median of 3
    python benchmarks/scaling.py --quick --json out.json --plot scaling.png

The embedded SmolLM2-135M on random tokens; no_press, snapkv (keeping half) and snap_spark
(the same, then λ = 0.8 of the key channels pruned, stored channel-sparse). Per press and length:
the prefill under the press (as the runner does it), the time per greedy decoding step from the
compressed cache, and the bytes that cache holds (``memory.cache_bytes``). The presses take
turns within each repetition. The plot goes next to ``--json`` (same name, ``.png``) unless
``--plot`` says where.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from spark_bench import memory
from spark_bench.benchmarking import (
    argument_parser,
    embedded_model_spec,
    greedy_steps,
    prefill,
    press_for,
    random_ids,
    timed,
    write_figures,
)
from spark_bench.cache import ChannelSparseCache
from spark_bench.models import LoadedModel, load_model_once

PRESSES = {
    "no_press": ("no_press", None),
    "snapkv": ("snapkv", None),
    "snap_spark λ=0.8": ("snap_spark", 0.8),
}
COMPRESSION_RATIO = 0.5
METRICS = (("prefill_s", "prefill (s)"), ("decode_ms", "decode (ms / token)"), ("kv_mb", "KV cache (MB)"))


def one_run(loaded: LoadedModel, press, ids: torch.Tensor, steps: int) -> tuple[float, float, int]:
    """Prefill seconds, decode seconds per step, KV bytes after prefill."""
    cache = ChannelSparseCache()
    prefill_s = timed(lambda: prefill(loaded.model, press, ids, cache), loaded.device)
    held = memory.cache_bytes(cache)
    decode_s = timed(lambda: greedy_steps(loaded.model, cache, ids, steps), loaded.device)
    return prefill_s, decode_s / steps, held


def measure(loaded: LoadedModel, lengths: list[int], steps: int, repeats: int) -> list[dict]:
    presses = {label: press_for(name, COMPRESSION_RATIO, kr) if name != "no_press" else None
               for label, (name, kr) in PRESSES.items()}  # fmt: skip
    warmup_ids = random_ids(loaded.model.config.vocab_size, 64, loaded.device)
    one_run(loaded, presses["snapkv"], warmup_ids, 2)  # first calls pay for lazy initialisation
    rows = []
    for length in lengths:
        ids = random_ids(loaded.model.config.vocab_size, length, loaded.device)
        runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label in presses}
        for _ in range(repeats):
            for label, press in presses.items():
                runs[label].append(one_run(loaded, press, ids, steps))
        for label, measured in runs.items():
            prefill, decode, held = zip(*measured, strict=True)
            rows.append(
                {
                    "press": label,
                    "tokens": length,
                    "prefill_s": statistics.median(prefill),
                    "decode_ms": 1000 * statistics.median(decode),
                    "kv_mb": held[0] / 2**20,
                }
            )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4))
    for ax, (key, title) in zip(axes, METRICS, strict=True):
        for label in PRESSES:
            mine = [r for r in rows if r["press"] == label]
            ax.plot([r["tokens"] for r in mine], [r[key] for r in mine], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("SmolLM2-135M: cost against context length (snapkv keeps 50%)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("prefill, decode and KV bytes against context length")
    parser.add_argument("--plot", type=Path, help="PNG path (default: next to --json, else scaling.png)")
    args = parser.parse_args(argv)
    lengths, steps, repeats = ([512, 1024, 2048], 8, 2) if args.quick else ([1024, 2048, 4096, 8192], 16, 3)
    loaded = load_model_once(embedded_model_spec())
    rows = measure(loaded, lengths, steps, repeats)

    print(f"SmolLM2-135M, median of {repeats}, {steps} decoding steps")
    print(f"{'press':<18}{'tokens':>8}{'prefill s':>11}{'decode ms/tok':>15}{'KV MB':>9}")
    for r in rows:
        print(
            f"{r['press']:<18}{r['tokens']:>8}{r['prefill_s']:>11.3f}{r['decode_ms']:>15.1f}{r['kv_mb']:>9.2f}"
        )
    target = args.plot or (args.json.with_suffix(".png") if args.json else Path("scaling.png"))
    plot(rows, target)
    print(f"plot: {target}")
    figures = {"scaling": rows, "scaling_plot": str(target)}
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()

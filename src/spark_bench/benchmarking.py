"""What the scripts in ``benchmarks/`` share: configs as ``run.py`` composes them, the paper's
attention geometry, and timings taken side by side.

Every figure a benchmark prints is a ratio of two (or more) things timed in turns within each
repetition (``interleaved_times``), so that a drift of the machine's speed (other load, clocks,
a shared CPU) falls on both sides alike; ratios are medians of the per-repetition ratios
(``paired_ratio``), times medians over the repetitions. On a GPU each timing
waits for the queued work (``engine.synchronize``) before reading the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spark_bench.config import register_resolvers
from spark_bench.engine import synchronize
from spark_bench.presses import build_press

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# The paper's Llama-3.1-8B attention (config.json of meta-llama/Llama-3.1-8B-Instruct: 32 query /
# 8 KV heads, head_dim 128, bf16), randomly initialised and shrunk so it runs on a CPU: 2 layers,
# hidden 1024, MLP 2048, and the embedded tokenizer's vocabulary.
LLAMA_GEOMETRY: dict[str, Any] = {
    "name": "llama3.1-8b-geometry",
    "loader": "random",
    "architecture": "llama",
    "init_seed": 0,
    "dtype": "bfloat16",
    "attn_implementation": "sdpa",
    "config": {
        "hidden_size": 1024,
        "intermediate_size": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 131072,
    },
}


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The config ``python run.py <overrides>`` would run."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def embedded_model_spec() -> dict[str, Any]:
    return dict(compose_config(["model=smollm2-135m"]).model)


def press_for(name: str, compression_ratio: float, key_ratio: float | None = None):
    """The press ``python run.py press=<name> compression_ratio=... key_ratio=...`` builds."""
    overrides = [f"press={name}", f"compression_ratio={compression_ratio}"]
    if key_ratio is not None:
        overrides.append(f"key_ratio={key_ratio}")
    return build_press(compose_config(overrides).press)


@torch.inference_mode()
def prefill(model: torch.nn.Module, press, ids: torch.Tensor, cache) -> None:
    """The prefill as the engine does it: the base model under the press (none: uncompressed)."""
    with press(model) if press is not None else contextlib.nullcontext():
        model.model(input_ids=ids, past_key_values=cache)


@torch.inference_mode()
def greedy_steps(model: torch.nn.Module, cache, ids: torch.Tensor, steps: int) -> None:
    """``steps`` greedy decoding steps after the prefill of ``ids`` into ``cache``, at the
    positions of the uncompressed prompt (as the engine decodes)."""
    token = ids[:, -1:]
    for step in range(steps):
        positions = torch.tensor([[ids.shape[1] + step]], device=ids.device)
        logits = model(input_ids=token, past_key_values=cache, position_ids=positions).logits
        token = logits[:, -1:].argmax(-1)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` takes, queued GPU work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(
    candidates: Sequence[Callable[[], Any]], repeats: int, device: torch.device, warmup: bool = True
) -> list[list[float]]:
    """Seconds of each candidate per repetition, the candidates taking turns within every
    repetition, in reverse order every other one (so that no candidate always runs first, or
    always right after another), after one untimed warm-up round (first calls pay for lazy
    initialisation)."""
    if warmup:
        for fn in candidates:
            fn()
    times: list[list[float]] = [[] for _ in candidates]
    for repetition in range(repeats):
        order = list(enumerate(candidates))
        for index, fn in order if repetition % 2 == 0 else reversed(order):
            times[index].append(timed(fn, device))
    return times


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repetitions of the ratio within each: a slow spell of the machine that hits
    one repetition moves both of its times, not the ratio."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def machine() -> str:
    """One line naming where the figures were measured."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}"


def argument_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="CI-sized: shorter contexts, fewer repetitions")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    return parser


def write_figures(path: Path | None, figures: dict[str, Any]) -> None:
    """The figures as JSON (with the machine they came from), if a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**figures, "machine": machine()}, indent=2) + "\n")


def random_ids(vocab_size: int, length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """[1, length] token ids, reproducible (ids below 3 are special tokens in our tokenizers)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (1, length), generator=generator).to(device)

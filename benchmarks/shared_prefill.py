"""Shared prefill: a press sweep's points answered from one prefill per context, against one by one.

    python benchmarks/shared_prefill.py                      # 10 samples per task, median of 3
    python benchmarks/shared_prefill.py --quick --json out.json

The README's SparK-vs-ThinK sweep on the default setting (SmolLM2-135M, RULER niah_single_1 and
niah_single_2 at 2k tokens, SnapKV evicting 10%): six distinct points, no_press, snapkv, and
snap_think / snap_spark at λ = 0.5 and 0.8. One by one, each point prefills every context itself
(what a sweep of six runs does); shared, ``engine.answer_shared`` prefills each context once and
every point compresses and decodes from its own cache: as a sweep job does by default, the
points decoding as one batch (``shared_prefill_speedup``), and with ``batch_decode=false``, one
after another. The sides take turns within each repetition; their answers and cache bytes must
be identical.

Also printed: what bounds batching, the speedup a batched step as cheap as one point's would
reach (the longest answer still takes one step per token) and what a step of all points costs
against one point's on this device; and peak memory. Beyond the weights, the shared side holds
every point's compressed cache at once (the tensor bytes it peaks at, against the largest single
point, no_press); with the weights counted, that is the ratio a machine sees.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from spark_bench import decode_together, engine, memory, tasks
from spark_bench.benchmarking import (
    argument_parser,
    compose_config,
    interleaved_times,
    paired_ratio,
    write_figures,
)
from spark_bench.data import Sample
from spark_bench.models import LoadedModel, load_model_once
from spark_bench.presses import build_press

# The README's sweep: press=no_press,snapkv,snap_think,snap_spark key_ratio=0.5,0.8, less the
# two points merged at launch (no_press and snapkv read no key_ratio).
POINTS = (
    ("no_press", 0.5),
    ("snapkv", 0.5),
    ("snap_think", 0.5),
    ("snap_think", 0.8),
    ("snap_spark", 0.5),
    ("snap_spark", 0.8),
)
LARGEST_POINT = 0  # no_press holds the most: the single point the memory ratio compares with
# The paper's LongBench grid (sweeps/longbench_budgets.yaml): 41 distinct points, of which 21
# prefill with SDPA (no_press, snapkv, snap_think, snap_spark) and 20 with PyramidKV's per-layer
# attention (pyramidkv, pyramid_think, pyramid_spark): two shared prefills per sample.
PAPER_GRID_POINTS = 41
PAPER_GRID_PREFILL_GROUPS = 2
STEP_COST_STEPS = 8  # forced decoding steps per side when timing one batched step against one alone


def point_config(press: str, key_ratio: float):
    return compose_config([f"press={press}", f"key_ratio={key_ratio}", "logger=none"])


def fixture(loaded: LoadedModel, per_task: int) -> list[Sample]:
    cfg = point_config(*POINTS[0])
    return tasks.get(cfg.dataset.name).samples(cfg.dataset, loaded.tokenizer, cfg.seed, per_task)


def one_by_one(loaded: LoadedModel, samples: list[Sample], out: list) -> Callable[[], None]:
    """Each point answers every sample with its own prefill, as six runs would."""

    def run() -> None:
        out.clear()
        for press_name, key_ratio in POINTS:
            press = build_press(point_config(press_name, key_ratio).press)
            for sample in samples:
                prompt = engine.encode(loaded.tokenizer, [sample], True)
                out.append(
                    engine.answer(loaded.model, loaded.tokenizer, press, prompt, [sample.max_new_tokens])
                )

    return run


def shared(
    loaded: LoadedModel, samples: list[Sample], out: list, batch_decode: bool = False
) -> Callable[[], None]:
    """Every point from one prefill per sample; collected point by point, as ``one_by_one``.
    ``batch_decode``: the points decode as one batch (``batch_decode=true``), else one by one."""

    def run() -> None:
        per_point: list[list] = [[] for _ in POINTS]
        for sample in samples:
            prompt = engine.encode(loaded.tokenizer, [sample], True)
            presses = [build_press(point_config(*point).press) for point in POINTS]
            answers = engine.answer_shared(
                loaded.model,
                loaded.tokenizer,
                presses,
                prompt,
                [sample.max_new_tokens],
                [None] * len(POINTS),
                batch_decode=batch_decode,
            )
            for point_answers, answer in zip(per_point, answers, strict=True):
                point_answers.append(answer)
        out.clear()
        out.extend(answer for point_answers in per_point for answer in point_answers)

    return run


def per_phase_seconds(alone: list, together: list) -> dict[str, float]:
    """Mean seconds per sample and point: prefill alone, decode; and the shared prefill (which
    includes every point's compression) per sample."""
    answers = [a for group in alone for a in group]  # one question per prefill: prefill_s is whole
    first_point = together[: len(together) // len(POINTS)]  # each sample's answers, once
    shared_prefills = [group[0].prefill_s * len(group) for group in first_point]
    return {
        "prefill_s": statistics.mean(a.prefill_s for a in answers),
        "decode_s": statistics.mean(a.decode_s for a in answers),
        "shared_prefill_s": statistics.mean(shared_prefills),
    }


def free_batching_ceiling(alone: list, samples: int, phases: dict[str, float]) -> float:
    """The speedup even a batched step costing no more than one point's would stop at: per
    sample, one shared prefill and then the longest of the points' decodes (an answer's tokens
    come one step at a time), against every point's prefill and decode one by one."""
    per_point = [alone[p * samples : (p + 1) * samples] for p in range(len(POINTS))]
    longest = sum(max(per_point[p][s][0].decode_s for p in range(len(POINTS))) for s in range(samples))
    one_by_one = sum(a.prefill_s + a.decode_s for group in alone for a in group)
    return one_by_one / (phases["shared_prefill_s"] * samples + longest)


def batch_step_cost(loaded: LoadedModel, sample: Sample, repeats: int) -> float | None:
    """Seconds of one decoding step of all points as a batch over one step of a point alone,
    from the same shared prefill's caches (``STEP_COST_STEPS`` steps, no stop token). On a
    weight-bandwidth-bound device this is near 1; a point's batched share is this / points.
    None where the model's dtype decodes one by one (``decode_together.batches``)."""
    model = loaded.model
    if not decode_together.batches(model):
        return None
    prompt = engine.encode(loaded.tokenizer, [sample], True)
    context = prompt.prefill_ids.shape[1]
    presses = [build_press(point_config(*point).press) for point in POINTS]
    caches, _ = engine.prefill_fanned_out(model, presses, prompt.prefill_ids.to(model.device))
    lengths = [[layer.get_seq_length() for layer in cache.layers] for cache in caches]
    first = torch.zeros(1, 1, model.config.vocab_size, device=model.device, dtype=model.dtype)

    def steps(points: int) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                decode_together.greedy_together(
                    model, caches[:points], [first] * points, context, STEP_COST_STEPS + 1, set()
                )
            for cache, own in zip(caches, lengths, strict=True):
                for layer, length in zip(cache.layers, own, strict=True):
                    layer.crop(length)

        return run

    alone_s, batch_s = interleaved_times([steps(1), steps(len(POINTS))], repeats, model.device)
    return paired_ratio(batch_s, alone_s)


def _fields(answers: list) -> list[tuple]:
    return [(a.text, a.kv_cache_bytes, a.kv_cache_dense_bytes) for group in answers for a in group]


def peak_ratios(loaded: LoadedModel, sample: Sample) -> dict[str, float | int | None]:
    """Peak tensor bytes beyond the weights: the largest point alone vs all points shared."""
    prompt = engine.encode(loaded.tokenizer, [sample], True)
    lengths = [sample.max_new_tokens]
    device = loaded.model.device

    def solo() -> None:
        press = build_press(point_config(*POINTS[LARGEST_POINT]).press)
        engine.answer(loaded.model, loaded.tokenizer, press, prompt, lengths)

    def together() -> None:
        presses = [build_press(point_config(*point).press) for point in POINTS]
        engine.answer_shared(loaded.model, loaded.tokenizer, presses, prompt, lengths, [None] * len(POINTS))

    solo_peak = memory.peak_tensor_bytes(lambda: None, solo, device)
    shared_peak = memory.peak_tensor_bytes(lambda: None, together, device)
    if solo_peak is None or shared_peak is None:
        return {"shared_prefill_peak_ratio": None, "shared_prefill_peak_ratio_beyond_weights": None}
    weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    return {
        "shared_prefill_peak_bytes_single": solo_peak[1],
        "shared_prefill_peak_bytes_shared": shared_peak[1],
        "shared_prefill_weight_bytes": weights,
        "shared_prefill_peak_ratio_beyond_weights": round(shared_peak[1] / solo_peak[1], 4),
        "shared_prefill_peak_ratio": round((weights + shared_peak[1]) / (weights + solo_peak[1]), 4),
    }


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser("a press sweep's points from one prefill vs one by one").parse_args(argv)
    per_task, repeats = (1, 1) if args.quick else (10, 3)
    loaded = load_model_once(point_config(*POINTS[0]).model)
    samples = fixture(loaded, per_task)[: 1 if args.quick else None]

    # untimed: the first calls pay for lazy initialisation (the CPU kernel's compilation)
    warm_prompt = engine.encode(loaded.tokenizer, samples[:1], True)
    warm_presses = [build_press(point_config(*point).press) for point in POINTS]
    engine.answer_shared(loaded.model, loaded.tokenizer, warm_presses, warm_prompt, [2], [None] * len(POINTS))

    alone: list = []
    together: list = []
    batched: list = []
    alone_s, shared_s, batched_s = interleaved_times(
        [
            one_by_one(loaded, samples, alone),
            shared(loaded, samples, together),
            shared(loaded, samples, batched, batch_decode=True),
        ],
        repeats,
        loaded.device,
        warmup=False,
    )
    speedup, one_by_one_speedup = paired_ratio(alone_s, batched_s), paired_ratio(alone_s, shared_s)
    same, same_one_by_one = _fields(alone) == _fields(batched), _fields(alone) == _fields(together)
    phases = per_phase_seconds(alone, together)
    step_cost = batch_step_cost(loaded, samples[0], repeats)
    figures = {
        # the default sweep job: one prefill per sample, the points decoded as one batch
        "shared_prefill_speedup": round(speedup, 4),
        "shared_prefill_identical_predictions": same,
        # batch_decode=false: the points decoded one after another
        "shared_prefill_speedup_decoding_one_by_one": round(one_by_one_speedup, 4),
        "shared_prefill_identical_predictions_decoding_one_by_one": same_one_by_one,
        "shared_prefill_points": len(POINTS),
        "shared_prefill_samples": len(samples),
        "shared_prefill_decoded_again": sum(a.decoded_again for group in batched for a in group),
        **{f"shared_prefill_{name}": round(seconds, 4) for name, seconds in phases.items()},
        "shared_prefill_batched_decode_s": round(statistics.mean(a.decode_s for g in batched for a in g), 4),
        # what bounds batching here: the longest answer, and a batched step's cost on this device
        "shared_prefill_speedup_ceiling_free_batching": round(
            free_batching_ceiling(alone, len(samples), phases), 4
        ),
        "shared_prefill_batch_step_cost": None if step_cost is None else round(step_cost, 4),
        **peak_ratios(loaded, samples[0]),
    }
    print(f"{len(POINTS)} points x {len(samples)} samples, median of {repeats}")
    print(f"  one by one                 {statistics.median(alone_s):8.1f} s")
    print(f"  shared, decoding 1 by 1    {statistics.median(shared_s):8.1f} s   x{one_by_one_speedup:.2f}")
    print(f"  shared, decoding together  {statistics.median(batched_s):8.1f} s   x{speedup:.2f}")
    print(
        f"  identical answers and cache bytes: {same} (together), {same_one_by_one} (1 by 1); "
        f"{figures['shared_prefill_decoded_again']} answers decoded again alone after a near-tie"
    )
    prefill_alone, prefill_shared, decode = (phases[k] for k in ("prefill_s", "shared_prefill_s", "decode_s"))
    print(
        f"  per sample and point: prefill {prefill_alone:.2f} s alone, {prefill_shared:.2f} s shared by all;"
        f" decode {decode:.2f} s"
    )
    print(
        f"  bounds on batching: x{figures['shared_prefill_speedup_ceiling_free_batching']:.2f} even if a"
        " batched step cost one point's (the longest answer still decodes token by token)"
        + (
            f"; here a step of all {len(POINTS)} points costs x{step_cost:.2f} one's"
            if step_cost is not None
            else ""
        )
    )
    alone_grid = PAPER_GRID_POINTS * (phases["prefill_s"] + phases["decode_s"])
    shared_grid = (
        PAPER_GRID_PREFILL_GROUPS * phases["shared_prefill_s"] + PAPER_GRID_POINTS * phases["decode_s"]
    )
    print(
        f"  projected, the paper's LongBench grid ({PAPER_GRID_POINTS} points) per sample at these phase"
        f" times: {alone_grid:.0f} s one by one, {shared_grid:.0f} s shared (x{alone_grid / shared_grid:.1f})"
    )
    if figures["shared_prefill_peak_ratio"] is not None:
        beyond, total = (
            figures["shared_prefill_peak_ratio_beyond_weights"],
            figures["shared_prefill_peak_ratio"],
        )
        print(
            f"  peak tensor memory beyond the weights: x{beyond:.2f} of the largest point alone;"
            f" with the weights x{total:.2f}"
        )
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()

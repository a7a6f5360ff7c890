"""What the harness adds: ``run.py``'s runner against a bare kvpress pipeline loop, side by side.

    python benchmarks/harness_overhead.py                      # 6 samples, median of 5
    python benchmarks/harness_overhead.py --quick --json out.json

Both sides answer the same RULER niah_single_1 samples (~2k tokens, generated once up front and
read from a local file, as kvpress's evaluation reads its DataFrame) with the embedded model,
the same SnapKV press and greedy decoding, the question after compression (kvpress's pipeline
does not compress it). The model is loaded once before either is timed (the runner reuses a
loaded model, as between jobs of one process). Timed end to end:

- runner: ``spark_bench.runner.run(cfg)`` into a fresh results directory: config checks, data
  loading, prompt building, the prefill and decode loop, per-sample scores and the appended
  ``predictions.jsonl``, the official task scores and the atomic ``results.json``;
- bare: read the same rows, build kvpress's ``kv-press-text-generation`` pipeline, call it per
  sample.

``harness_overhead_ratio`` is runner / bare: the median of the ratios of repetitions in which
the two take turns.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from pathlib import Path

from transformers import pipeline

from spark_bench import runner, tasks
from spark_bench.benchmarking import (
    argument_parser,
    compose_config,
    interleaved_times,
    paired_ratio,
    press_for,
    write_figures,
)
from spark_bench.models import load_model_once

CONTEXT_TOKENS = 2048
COMPRESSION_RATIO = 0.5
TASK = "niah_single_1"


def write_local_set(directory: Path, samples: int) -> Path:
    """Generate the samples once, as a local RULER set (the hub set's columns) in ``directory``."""
    cfg = compose_config(_overrides(directory, samples, source="generate"))
    loaded = load_model_once(cfg.model)
    rows = [
        {
            "context": s.context,
            "question": s.question,
            "answer_prefix": s.answer_prefix,
            "answer": list(s.answers),
            "task": s.task,
            "max_new_tokens": s.max_new_tokens,
        }
        for s in tasks.get(cfg.dataset.name).samples(cfg.dataset, loaded.tokenizer, cfg.seed, cfg.max_samples)
    ]
    path = directory / str(CONTEXT_TOKENS) / "ruler.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _overrides(data_dir: Path, samples: int, source: str = "local") -> list[str]:
    return [
        "model=smollm2-135m",
        "dataset=ruler",
        f"dataset.tasks=[{TASK}]",
        f"dataset.context_length={CONTEXT_TOKENS}",
        f"dataset.num_samples={samples}",
        f"dataset.source={source}",
        f"dataset.data_dir={data_dir}" if source == "local" else "dataset.data_dir=null",
        "press=snapkv",
        f"compression_ratio={COMPRESSION_RATIO}",
        "compress_questions=false",  # as kvpress's pipeline: the question follows compression
        "logger=none",
    ]


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser("run.py's runner vs a bare kvpress pipeline loop").parse_args(argv)
    samples, repeats = (3, 3) if args.quick else (6, 5)
    work = Path(tempfile.mkdtemp(prefix="harness-overhead-"))
    try:
        figures = measure(work, samples, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_figures(args.json, figures)
    return figures


def measure(work: Path, samples: int, repeats: int) -> dict:
    data_file = write_local_set(work / "data", samples)
    overrides = _overrides(work / "data", samples)
    loaded = load_model_once(compose_config(overrides).model)
    press = press_for("snapkv", COMPRESSION_RATIO)
    runs = iter(range(10**6))
    outputs: dict[str, list[str]] = {}

    def with_runner() -> None:
        root = work / "results" / str(next(runs))  # fresh: a finished run would be skipped
        runner.run(compose_config([*overrides, f"paths.results_root={root}"]))
        predictions = next(root.rglob("predictions.jsonl"))
        outputs["runner"] = [json.loads(line)["prediction"] for line in predictions.open()]

    def bare_loop() -> None:
        rows = [json.loads(line) for line in data_file.open()]
        pipe = pipeline("kv-press-text-generation", model=loaded.model, tokenizer=loaded.tokenizer)
        outputs["bare"] = [
            pipe(
                row["context"],
                question=row["question"],
                answer_prefix=row["answer_prefix"],
                press=press,
                max_new_tokens=row["max_new_tokens"],
            )["answer"]
            for row in rows
        ]

    runner_times, bare_times = interleaved_times([with_runner, bare_loop], repeats, loaded.device)
    runner_s, bare_s = statistics.median(runner_times), statistics.median(bare_times)
    ratio = paired_ratio(runner_times, bare_times)
    same = outputs["runner"] == outputs["bare"]
    print(f"{samples} samples of {TASK} at {CONTEXT_TOKENS} tokens, snapkv, median of {repeats}:")
    print(f"  bare kvpress pipeline loop  {bare_s:8.2f} s")
    print(f"  spark_bench runner          {runner_s:8.2f} s   ratio {ratio:.3f} (target <= 1.05)")
    print(f"  identical predictions: {same}")
    return {
        "harness_overhead_ratio": round(ratio, 4),
        "harness_runner_s": round(runner_s, 3),
        "harness_bare_s": round(bare_s, 3),
        "harness_samples": samples,
        "harness_identical_predictions": same,
    }


if __name__ == "__main__":
    main()

"""What a run writes: one prediction record per answered sample, and ``results.json`` from them.

A record is scored alone as it is written (so a killed run's ``predictions.jsonl`` shows its
progress); ``results.json`` rescores every answer per task with the official metric once the
last sample is in, and is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spark_bench import memory, paths, provenance, tasks
from spark_bench.config import RunSpec
from spark_bench.data import Sample
from spark_bench.engine import Answer
from spark_bench.results import SCHEMA, Prediction, Results, write_results

log = logging.getLogger(__name__)


def answered(benchmark: str, sample: Sample, answer: Answer) -> Prediction:
    """The record of an answered sample, scored with its task's metric."""
    record = Prediction(
        id=sample.id,
        task=sample.task,
        prediction=answer.text,
        answers=list(sample.answers),
        score=tasks.get(benchmark).score(
            sample.task, [answer.text], [list(sample.answers)], sample.all_classes
        ),
        context_tokens=answer.context_tokens,
        kv_cache_bytes=answer.kv_cache_bytes,
        kv_cache_dense_bytes=answer.kv_cache_dense_bytes,
        prefill_s=answer.prefill_s,
        decode_s=answer.decode_s,
        code_version=provenance.code_version(),
    )
    if answer.prefill_shared_by > 1:  # prefill_s is then the shared prefill's, compress_s its own part
        record["prefill_shared_by"] = answer.prefill_shared_by
        record["compress_s"] = answer.compress_s
    return record


def failed(sample: Sample, err: BaseException) -> Prediction:
    """A sample that raised: no prediction (scored as the empty answer), its error kept."""
    return Prediction(
        id=sample.id,
        task=sample.task,
        prediction="",
        answers=list(sample.answers),
        score=0.0,
        context_tokens=0,
        kv_cache_bytes=0,
        kv_cache_dense_bytes=0,
        prefill_s=0.0,
        decode_s=0.0,
        code_version=provenance.code_version(),
        error=f"{type(err).__name__}: {err}",
    )


def finish(
    out_dir: Path,
    spec: RunSpec,
    seed: int,
    config: dict[str, Any],
    records: Sequence[Prediction],
    samples: Sequence[Sample],
    started_at: str,
    total_s: float,
    made_by: dict[str, Any],
) -> Results:
    """Score ``records`` (one per sample, in sample order) and write ``results.json``."""
    rows = [
        tasks.Row(r["task"], r["prediction"], r["answers"], s.all_classes, s.labels)
        for r, s in zip(records, samples, strict=True)
    ]
    scores, breakdown = tasks.get(spec.dataset).summarize(spec.tasks, rows)
    n_failed = sum(1 for r in records if r.get("error"))
    if n_failed:
        log.warning(
            "%d of %d samples failed and are scored as empty answers; their errors are in %s "
            "(the same command retries them)",
            n_failed,
            len(records),
            out_dir / paths.PREDICTIONS_FILE,
        )
    answered_records = [r for r in records if not r.get("error")] or records
    shared = [r for r in records if r.get("prefill_shared_by", 1) > 1]
    results = Results(
        schema=SCHEMA,
        run={
            "model": spec.model,
            "press": spec.press,
            "dataset": spec.dataset,
            "tasks": list(spec.tasks),
            **spec.knobs,
            "seed": seed,
            "n_samples": len(records),
            "n_failed": n_failed,
            "git_sha": made_by["git"]["sha"],
            "started_at": started_at,
            "finished_at": provenance.now(),
            "config_hash": spec.config_hash,
            "config": config,
        },
        scores=scores,
        breakdown=breakdown,
        memory={
            "kv_cache_bytes": round(_mean(r["kv_cache_bytes"] for r in answered_records)),
            "kv_cache_dense_bytes": round(_mean(r["kv_cache_dense_bytes"] for r in answered_records)),
            "peak_gpu_bytes": memory.peak_gpu_bytes(),
            "peak_rss_bytes": memory.peak_rss_bytes(),
        },
        timing={
            "prefill_s": sum(r["prefill_s"] for r in records),
            "decode_s": sum(r["decode_s"] for r in records),
            "total_s": total_s,
            "shared_prefill_samples": len(shared),
            "compress_s": sum(r["compress_s"] for r in shared) if shared else None,
        },
        provenance=made_by,
    )
    write_results(out_dir / paths.RESULTS_FILE, results)
    log.info("scores %s -> %s", scores, out_dir / paths.RESULTS_FILE)
    return results


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items)

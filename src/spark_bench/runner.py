"""One benchmark run: samples -> compress -> generate -> score -> results.

``run(cfg)`` checks the whole config first (no model loads for a typo), then loads model,
samples and press, answers every sample not already in ``predictions.jsonl`` (so a killed run
continues where it stopped), scores with each task's official metric and writes
``results.json`` atomically. W&B, if on, mirrors the finished results.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from spark_bench import engine, memory, metrics, paths, sweep
from spark_bench.config import ConfigError, RunSpec, effective_config, validate
from spark_bench.data import Sample, load_samples
from spark_bench.data.truncation import truncate_middle
from spark_bench.models import load_model
from spark_bench.presses import build_press
from spark_bench.results import Prediction, PredictionLog, Results, read_results, write_results
from spark_bench.tracking import start_tracker

log = logging.getLogger(__name__)


def plan(cfg: DictConfig) -> str:
    """dry_run=true: one line saying what this job would do, after checking its config."""
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    state = "done" if complete_results(out_dir, spec) is not None and not cfg.rerun else "todo"
    return f"{state:4}  {paths.run_name(spec)}  -> {out_dir}"


def run(cfg: DictConfig) -> Results:
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    _check_writable(out_dir)
    if cfg.rerun:
        _archive_previous(out_dir)
    else:
        finished = complete_results(out_dir, spec)
        if finished is not None:
            log.info(
                "skipping %s: it holds a complete results.json of this config (rerun=true forces)", out_dir
            )
            sweep.record_job("skipped", out_dir)
            return finished
    log.info("run %s/%s/%s -> %s", spec.dataset, spec.model, spec.press, out_dir)
    config = effective_config(cfg, spec.knobs)
    tracker = start_tracker(cfg.logger, paths.run_name(spec), config, out_dir)
    failed = True
    try:
        results = _run(cfg, spec, out_dir, config)
        tracker.log_results(results, out_dir / paths.PREDICTIONS_FILE)
        failed = False
        sweep.record_job("done", out_dir)
        return results
    finally:
        tracker.finish(failed=failed)


def _run(cfg: DictConfig, spec: RunSpec, out_dir: Path, config: dict[str, Any]) -> Results:
    started_at = _now()
    _seed_everything(cfg.seed)
    loaded = load_model(cfg.model)
    samples = load_samples(cfg.dataset, loaded.tokenizer, cfg.seed, cfg.max_samples)
    press = build_press(cfg.press)

    predictions = PredictionLog(out_dir / paths.PREDICTIONS_FILE)
    done = predictions.read()
    predictions.repair()
    samples = _truncate(loaded.tokenizer, samples, cfg.model.max_prompt_tokens)
    todo = [s for s in samples if s.id not in done]
    if done:
        log.info(
            "resuming: %d of %d samples already answered in %s",
            len(samples) - len(todo),
            len(samples),
            out_dir,
        )

    memory.reset_peak_gpu()
    loop_start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="samples", unit="sample", disable=not sys.stderr.isatty())
    for group in _prefill_groups(todo, cfg.compress_questions):
        prompt = engine.encode(loaded.tokenizer, group, cfg.compress_questions)
        lengths = [cfg.max_new_tokens or s.max_new_tokens for s in group]
        answers = engine.answer(
            loaded.model, loaded.tokenizer, press, prompt, lengths, spec.knobs["kv_budget"]
        )
        for sample, result in zip(group, answers, strict=True):
            record = _record(spec.dataset, sample, result)
            predictions.append(record)
            done[sample.id] = record
        bar.update(len(group))
    bar.close()
    total_s = time.perf_counter() - loop_start

    ordered = [done[s.id] for s in samples]
    return _finish(cfg, spec, out_dir, config, ordered, samples, started_at, total_s)


def complete_results(out_dir: Path, spec: RunSpec) -> Results | None:
    """The finished results of this exact config in ``out_dir``, if any (``results.json`` is
    written once, at the end of a complete run)."""
    path = out_dir / paths.RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = read_results(path)
    except (ValueError, OSError) as err:
        log.warning("%s is unreadable (%s): running again", path, err)
        return None
    return results if results["run"]["config_hash"] == spec.config_hash else None


def _archive_previous(out_dir: Path) -> None:
    """rerun=true: move earlier outputs to ``previous/<time>/`` (nothing written is lost)."""
    earlier = [
        out_dir / name for name in (paths.RESULTS_FILE, paths.PREDICTIONS_FILE) if (out_dir / name).exists()
    ]
    if not earlier:
        return
    archive = out_dir / "previous" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    archive.mkdir(parents=True)
    for path in earlier:
        path.rename(archive / path.name)
    log.info("rerun=true: earlier outputs moved to %s", archive)


def _truncate(tokenizer, samples: list[Sample], max_tokens: int) -> list[Sample]:
    """The official middle truncation, said once per run with how many prompts it cut."""
    out, cut = [], 0
    for sample in samples:
        sample, truncated = truncate_middle(tokenizer, sample, max_tokens)
        out.append(sample)
        cut += truncated
    if cut:
        log.warning(
            "%d of %d prompts exceed model.max_prompt_tokens=%d: their middle is cut",
            cut,
            len(out),
            max_tokens,
        )
    return out


def _prefill_groups(samples: Sequence[Sample], compress_questions: bool) -> Iterator[list[Sample]]:
    """Samples that can share one prefill: same task and context, questions not compressed."""
    if compress_questions:
        for sample in samples:
            yield [sample]
        return
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.task, sample.context), []).append(sample)
    yield from groups.values()


def _record(benchmark: str, sample: Sample, result: engine.Answer) -> Prediction:
    return Prediction(
        id=sample.id,
        task=sample.task,
        prediction=result.text,
        answers=list(sample.answers),
        score=metrics.score(
            benchmark, sample.task, [result.text], [list(sample.answers)], sample.all_classes
        ),
        context_tokens=result.context_tokens,
        kv_cache_bytes=result.kv_cache_bytes,
        kv_cache_dense_bytes=result.kv_cache_dense_bytes,
        prefill_s=result.prefill_s,
        decode_s=result.decode_s,
    )


def _finish(
    cfg: DictConfig,
    spec: RunSpec,
    out_dir: Path,
    config: dict[str, Any],
    records: list[Prediction],
    samples: list[Sample],
    started_at: str,
    total_s: float,
) -> Results:
    rows = [
        metrics.Row(r["task"], r["prediction"], r["answers"], s.all_classes, s.labels)
        for r, s in zip(records, samples, strict=True)
    ]
    scores, breakdown = metrics.summarize(spec.dataset, spec.tasks, rows)
    results = Results(
        schema=1,
        run={
            "model": spec.model,
            "press": spec.press,
            "dataset": spec.dataset,
            "tasks": list(spec.tasks),
            **{
                k: spec.knobs[k]
                for k in ("compression_ratio", "kv_budget", "key_ratio", "value_ratio", "recovery")
            },
            "seed": cfg.seed,
            "n_samples": len(records),
            "git_sha": _git_sha(),
            "started_at": started_at,
            "finished_at": _now(),
            "config_hash": spec.config_hash,
            "config": config,
        },
        scores=scores,
        breakdown=breakdown,
        memory={
            "kv_cache_bytes": round(_mean(r["kv_cache_bytes"] for r in records)),
            "kv_cache_dense_bytes": round(_mean(r["kv_cache_dense_bytes"] for r in records)),
            "peak_gpu_bytes": memory.peak_gpu_bytes(),
            "peak_rss_bytes": memory.peak_rss_bytes(),
        },
        timing={
            "prefill_s": sum(r["prefill_s"] for r in records),
            "decode_s": sum(r["decode_s"] for r in records),
            "total_s": total_s,
        },
    )
    write_results(out_dir / paths.RESULTS_FILE, results)
    log.info("scores %s -> %s", scores, out_dir / paths.RESULTS_FILE)
    return results


def _mean(values: Iterator[float]) -> float:
    items = list(values)
    return sum(items) / len(items)


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the run directory {out_dir}: {err}; set paths.results_root"
        ) from err
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"the run directory {out_dir} is not writable; set paths.results_root")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_sha() -> str | None:
    """The commit of the spark_bench checkout that ran, if it is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None

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
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from spark_bench import engine, memory, metrics, paths, provenance, sweep
from spark_bench.config import ConfigError, RunSpec, effective_config, validate
from spark_bench.data import Sample, load_samples
from spark_bench.data.truncation import PromptTooLong, truncate_middle
from spark_bench.models import load_model_once, load_tokenizer
from spark_bench.presses import build_press
from spark_bench.progress import Progress
from spark_bench.results import Prediction, PredictionLog, Results, read_results, write_results
from spark_bench.run_lock import RunLock
from spark_bench.tracking import start_tracker

log = logging.getLogger(__name__)

# The code_version of an answer written before answers recorded theirs.
UNRECORDED = "unrecorded"
# rerun=stale: run again the points whose complete results.json other code made.
STALE = "stale"


def plan(cfg: DictConfig) -> str:
    """dry_run=true: one line saying what this job would do, after checking its config."""
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    finished = complete_results(out_dir, spec)
    if finished is None or cfg.rerun is True:
        state = "todo"
    elif made_by_this_code(finished):
        state = "done"
    else:  # skipped with a warning, or run again under rerun=stale
        state = "todo" if cfg.rerun == STALE else "stale"
    return f"{state:5}  {paths.run_name(spec)}  -> {out_dir}"


def run(cfg: DictConfig) -> Results:
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    _check_writable(out_dir)
    if cfg.rerun is True:
        _archive_previous(out_dir)
    else:
        finished = complete_results(out_dir, spec)
        if finished is not None and made_by_this_code(finished):
            log.info(
                "skipping %s: it holds a complete results.json of this config (rerun=true forces)", out_dir
            )
            sweep.record_job("skipped", out_dir)
            return finished
        if finished is not None:
            made_by, now = provenance.result_code_version(finished), provenance.code_version()
            if cfg.rerun != STALE:
                log.warning(
                    "skipping %s: it holds a complete results.json of this config, but made by other code "
                    "(%s; this is %s): rerun=stale runs such points again, rerun=true every point",
                    out_dir,
                    made_by or "unrecorded",
                    now,
                )
                sweep.record_job("skipped", out_dir, note=f"stale: made by {made_by or 'unrecorded code'}")
                return finished
            log.info("rerun=stale: %s was made by other code (%s; this is %s)", out_dir, made_by, now)
            _archive_previous(out_dir)
        else:
            _set_aside_unreadable(out_dir / paths.RESULTS_FILE)
    log.info("run %s/%s/%s -> %s", spec.dataset, spec.model, spec.press, out_dir)
    config = effective_config(cfg, spec.knobs)
    with RunLock(out_dir):
        sweep.record_job(sweep.STARTED, out_dir)
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
    # The data before the weights: an unreachable hub or a bad file fails in seconds, not after
    # an 8B model has loaded (RULER fits its samples with the tokenizer, which loads alone).
    tokenizer = load_tokenizer(cfg.model)
    try:
        samples = load_samples(cfg.dataset, tokenizer, cfg.seed, cfg.max_samples)
    except (ValueError, FileNotFoundError) as err:  # bad data files, a context too short: the input's fault
        raise ConfigError(str(err)) from err
    try:  # the same tokenizer the model's loader takes, so a too small max_prompt_tokens fails here
        samples = _truncate(tokenizer, samples, cfg.model.max_prompt_tokens)
    except PromptTooLong as err:
        raise ConfigError(str(err)) from err
    # Files an earlier run left, also checked before the weights load; a damaged one is the
    # user's to mend (the message says where and how), never ours to rewrite.
    _check_results_path(out_dir)
    predictions = PredictionLog(out_dir / paths.PREDICTIONS_FILE)
    try:
        earlier = predictions.read({s.id: s.task for s in samples})
    except ValueError as err:
        raise ConfigError(str(err)) from err
    done = {k: r for k, r in earlier.items() if not r.get("error")}  # failed ones again
    predictions.repair()
    loaded = load_model_once(cfg.model)
    press = build_press(cfg.press)

    todo = [s for s in samples if s.id not in done]
    if done:
        log.info(
            "resuming: %d of %d samples already answered in %s",
            len(samples) - len(todo),
            len(samples),
            out_dir,
        )
        _warn_of_other_code(done.values())

    memory.reset_peak_gpu()
    loop_start = time.perf_counter()
    template_args = cfg.model.get("chat_template_kwargs")
    chat_template_kwargs = OmegaConf.to_container(template_args) if template_args is not None else {}
    progress = Progress(len(todo), done_before=len(samples) - len(todo))
    for group in prefill_groups(todo, cfg.compress_questions):
        try:
            prompt = engine.encode(loaded.tokenizer, group, cfg.compress_questions, chat_template_kwargs)
            lengths = [cfg.max_new_tokens or s.max_new_tokens for s in group]
            answers = engine.answer(
                loaded.model, loaded.tokenizer, press, prompt, lengths, spec.knobs["kv_budget"]
            )
            records = [_record(spec.dataset, s, a) for s, a in zip(group, answers, strict=True)]
        except Exception as err:  # e.g. CUDA out of memory on one very long context
            if _interrupts_the_job(err):
                raise
            log.exception("%d sample(s) failed (%s): recorded, the run goes on", len(group), group[0].id)
            records = [_failed_record(sample, err) for sample in group]
            engine.release_memory()
        for record in records:
            predictions.append(record)
            done[record["id"]] = record
        progress.update(len(records), failed=sum(1 for r in records if r.get("error")))
    progress.close()
    total_s = time.perf_counter() - loop_start

    ordered = [done[s.id] for s in samples]
    made_by = provenance.collect(loaded.model)
    made_by["answers_by_code_version"] = dict(Counter(r.get("code_version", UNRECORDED) for r in ordered))
    return _finish(cfg, spec, out_dir, config, ordered, samples, started_at, total_s, made_by)


def _interrupts_the_job(err: Exception) -> bool:
    """Whether ``err`` was raised into the loop by the job's scheduler, not by the sample: on
    SLURM, submitit's signal handler raises ``UncompletedJobError`` wherever the job is when its
    time limit comes with no requeue left. Recorded as the sample's failure, that sample would
    be scored as an empty answer, and a job finishing in its last minutes would publish it."""
    try:
        from submitit.core.utils import UncompletedJobError
    except ImportError:  # no SLURM launcher installed: nothing can raise it
        return False
    return isinstance(err, UncompletedJobError)


def _warn_of_other_code(earlier: Iterable[Prediction]) -> None:
    """Say when a resumed run's earlier answers were made by other code (a fix landed between
    a killed job and its relaunch): the results would mix both. results.json counts them."""
    now = provenance.code_version()
    counts = Counter(r.get("code_version", UNRECORDED) for r in earlier)
    others = {version: n for version, n in counts.items() if version != now}
    if others:
        log.warning(
            "resuming answers made by other code (%s; this is %s): the results will mix both "
            "(provenance.answers_by_code_version counts them); rerun=true answers every sample anew",
            ", ".join(f"{n} by {version}" for version, n in sorted(others.items())),
            now,
        )


def made_by_this_code(results: Results) -> bool:
    """Whether a results.json was made by the code that runs now (same commit, same changes
    to it); one that does not say which code made it was not."""
    return provenance.result_code_version(results) == provenance.code_version()


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
    if results["run"]["config_hash"] != spec.config_hash or results["run"].get("n_failed"):
        return None  # another config, or samples to retry
    return results


def _set_aside_unreadable(path: Path) -> None:
    """A results.json that cannot be read (damaged, another schema) is moved to ``previous/``
    before the run writes its own: it may be the only copy of someone's numbers."""
    if not path.is_file():
        return
    try:
        read_results(path)
    except (ValueError, OSError):
        aside = _archive_dir(path.parent) / path.name
        aside.parent.mkdir(parents=True)
        path.rename(aside)
        log.warning("%s could not be read: moved to %s, the run writes a new one", path, aside)


def _archive_dir(out_dir: Path) -> Path:
    return out_dir / paths.ARCHIVE_DIR / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _archive_previous(out_dir: Path) -> None:
    """rerun=true: move earlier outputs to ``previous/<time>/`` (nothing written is lost)."""
    earlier = [
        out_dir / name for name in (paths.RESULTS_FILE, paths.PREDICTIONS_FILE) if (out_dir / name).exists()
    ]
    if not earlier:
        return
    archive = _archive_dir(out_dir)
    archive.mkdir(parents=True)
    for path in earlier:
        path.rename(archive / path.name)
    log.info("rerun=true: earlier outputs moved to %s", archive)


def _check_results_path(out_dir: Path) -> None:
    """``results.json``, if there, is a file: the run ends by replacing it, which would fail on
    anything else after every sample has been answered."""
    path = out_dir / paths.RESULTS_FILE
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"{path} is not a file: move it out of {out_dir}, or set rerun=true to start over "
            "(earlier outputs move to previous/)"
        )


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


def prefill_groups(samples: Sequence[Sample], compress_questions: bool) -> Iterator[list[Sample]]:
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
        code_version=provenance.code_version(),
    )


def _failed_record(sample: Sample, err: BaseException) -> Prediction:
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


def _finish(
    cfg: DictConfig,
    spec: RunSpec,
    out_dir: Path,
    config: dict[str, Any],
    records: list[Prediction],
    samples: list[Sample],
    started_at: str,
    total_s: float,
    made_by: dict[str, Any],
) -> Results:
    rows = [
        metrics.Row(r["task"], r["prediction"], r["answers"], s.all_classes, s.labels)
        for r, s in zip(records, samples, strict=True)
    ]
    scores, breakdown = metrics.summarize(spec.dataset, spec.tasks, rows)
    failed = [r for r in records if r.get("error")]
    if failed:
        log.warning(
            "%d of %d samples failed and are scored as empty answers; their errors are in %s "
            "(the same command retries them)",
            len(failed),
            len(records),
            out_dir / paths.PREDICTIONS_FILE,
        )
    answered = [r for r in records if not r.get("error")] or records
    results = Results(
        schema=1,
        run={
            "model": spec.model,
            "press": spec.press,
            "dataset": spec.dataset,
            "tasks": list(spec.tasks),
            **spec.knobs,
            "seed": cfg.seed,
            "n_samples": len(records),
            "n_failed": len(failed),
            "git_sha": made_by["git"]["sha"],
            "started_at": started_at,
            "finished_at": _now(),
            "config_hash": spec.config_hash,
            "config": config,
        },
        scores=scores,
        breakdown=breakdown,
        memory={
            "kv_cache_bytes": round(_mean(r["kv_cache_bytes"] for r in answered)),
            "kv_cache_dense_bytes": round(_mean(r["kv_cache_dense_bytes"] for r in answered)),
            "peak_gpu_bytes": memory.peak_gpu_bytes(),
            "peak_rss_bytes": memory.peak_rss_bytes(),
        },
        timing={
            "prefill_s": sum(r["prefill_s"] for r in records),
            "decode_s": sum(r["decode_s"] for r in records),
            "total_s": total_s,
        },
        provenance=made_by,
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

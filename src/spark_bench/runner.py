"""One benchmark run: samples -> compress -> generate -> score -> results.

``run(cfg)`` checks the whole config first (no model loads for a typo), then loads samples,
model and press, answers every sample not already in ``predictions.jsonl`` (so a killed run
continues where it stopped), scores with each task's official metric and writes
``results.json`` atomically. W&B, if on, mirrors the finished results. The runner only orders
these steps; each belongs to its own module (``run_directory``, ``engine``, ``run_results``).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from spark_bench import engine, memory, paths, provenance, run_directory, run_results, sweep, tasks
from spark_bench.config import ConfigError, RunSpec, effective_config, validate
from spark_bench.data import Sample
from spark_bench.data.truncation import PromptTooLong, truncate_all
from spark_bench.models import load_model_once, load_tokenizer
from spark_bench.presses import build_press
from spark_bench.progress import Progress
from spark_bench.results import Prediction, PredictionLog, Results
from spark_bench.run_lock import RunLock
from spark_bench.tracking import start_tracker

log = logging.getLogger(__name__)


def plan(cfg: DictConfig) -> str:
    """dry_run=true: one line saying what this job would do, after checking its config."""
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    return f"{run_directory.state(out_dir, spec, cfg.rerun):5}  {paths.run_name(spec)}  -> {out_dir}"


def run(cfg: DictConfig) -> Results:
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    skip = run_directory.prepare(out_dir, spec, cfg.rerun)
    if skip is not None:
        sweep.record_job("skipped", out_dir, note=skip.note)
        return skip.results
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
    started_at = provenance.now()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    samples = _samples(cfg)
    # Files an earlier run left, also checked before the weights load; a damaged one is the
    # user's to mend (the message says where and how), never ours to rewrite.
    run_directory.check_results_path(out_dir)
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
        answered = len(samples) - len(todo)
        log.info("resuming: %d of %d samples already answered in %s", answered, len(samples), out_dir)
        provenance.warn_of_other_code(done.values())

    memory.reset_peak_gpu()
    loop_start = time.perf_counter()
    progress = Progress(len(todo), done_before=len(samples) - len(todo))
    for record in _answer(cfg, spec, loaded, press, todo):
        predictions.append(record)
        done[record["id"]] = record
        progress.update(1, failed=1 if record.get("error") else 0)
    progress.close()
    total_s = time.perf_counter() - loop_start

    ordered = [done[s.id] for s in samples]
    made_by = provenance.collect(loaded.model)
    made_by["answers_by_code_version"] = provenance.answers_by_code_version(ordered)
    return run_results.finish(out_dir, spec, cfg.seed, config, ordered, samples, started_at, total_s, made_by)


def _samples(cfg: DictConfig) -> list[Sample]:
    """The run's samples, cut to the model's prompt length. The data before the weights: an
    unreachable hub or a bad file fails in seconds, not after an 8B model has loaded (RULER
    fits its samples with the tokenizer, which loads alone)."""
    tokenizer = load_tokenizer(cfg.model)
    try:
        samples = tasks.get(cfg.dataset.name).samples(cfg.dataset, tokenizer, cfg.seed, cfg.max_samples)
    except (ValueError, FileNotFoundError) as err:  # bad data files, a context too short: the input's fault
        raise ConfigError(str(err)) from err
    try:  # the same tokenizer the model's loader takes, so a too small max_prompt_tokens fails here
        return truncate_all(tokenizer, samples, cfg.model.max_prompt_tokens)
    except PromptTooLong as err:
        raise ConfigError(str(err)) from err


def _answer(cfg: DictConfig, spec: RunSpec, loaded, press, todo: list[Sample]):
    """One record per sample of ``todo``, as each prefill group is answered. A group that
    raises (e.g. CUDA out of memory on one very long context) is recorded failed and the run
    goes on; the next start retries it. The scheduler's interruption is not a failure."""
    template_args = cfg.model.get("chat_template_kwargs")
    chat_template_kwargs = OmegaConf.to_container(template_args) if template_args is not None else {}
    for group in engine.prefill_groups(todo, cfg.compress_questions):
        try:
            prompt = engine.encode(loaded.tokenizer, group, cfg.compress_questions, chat_template_kwargs)
            lengths = [cfg.max_new_tokens or s.max_new_tokens for s in group]
            answers = engine.answer(
                loaded.model, loaded.tokenizer, press, prompt, lengths, spec.knobs["kv_budget"]
            )
            records: list[Prediction] = [
                run_results.answered(spec.dataset, s, a) for s, a in zip(group, answers, strict=True)
            ]
        except Exception as err:
            if sweep.interrupts_the_job(err):
                raise
            log.exception("%d sample(s) failed (%s): recorded, the run goes on", len(group), group[0].id)
            records = [run_results.failed(sample, err) for sample in group]
            engine.release_memory()
        yield from records

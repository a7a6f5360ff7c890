"""Benchmark runs: samples -> compress -> generate -> score -> results.

``run(cfg)`` is one point: it checks the whole config first (no model loads for a typo), then
loads samples, model and press, answers every sample not already in ``predictions.jsonl`` (so
a killed run continues where it stopped), scores with each task's official metric and writes
``results.json`` atomically. W&B, if on, mirrors the finished results.

``run_together(cfg, points)`` is a sweep job of several points that differ only in press and
press knobs (``spark_bench.sweeper``): the same steps, with the data and model loaded once and
each context prefilled once for every point whose press can share it (``engine.sharing_sets``).
Each point keeps its own run directory, lock, resume, skip, results and ``jobs.jsonl`` lines;
one point's bad input or damaged files fail that point only. The runner only orders these
steps; each belongs to its own module (``run_directory``, ``engine``, ``run_results``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from spark_bench import engine, memory, paths, provenance, run_directory, run_results, sweep, tasks
from spark_bench.config import BATCH_DECODE_KEY, ConfigError, RunSpec, effective_config, validate
from spark_bench.data import Sample
from spark_bench.data.truncation import PromptTooLong, truncate_all
from spark_bench.models import LoadedModel, load_model_once, load_tokenizer, restore_attention
from spark_bench.presses import build_press
from spark_bench.progress import Progress
from spark_bench.results import Prediction, PredictionLog, Results
from spark_bench.run_lock import RunLock
from spark_bench.tracking import start_tracker

log = logging.getLogger(__name__)

Identity = Callable[[], contextlib.AbstractContextManager[Any]]  # Hydra's runtime as a point's own job has it


@dataclass(eq=False)  # a point is itself: hashed by identity
class _Point:
    """One point of this process: its config, run directory, and the answers it holds."""

    cfg: DictConfig
    identity: Identity
    spec: RunSpec
    out_dir: Path
    config: dict[str, Any]
    started_at: str = field(default_factory=provenance.now)
    predictions: PredictionLog | None = None
    done: dict[str, Prediction] = field(default_factory=dict)
    press: Any = None


def plan(cfg: DictConfig) -> str:
    """dry_run=true: one line saying what this job would do, after checking its config."""
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    return f"{run_directory.state(out_dir, spec, cfg.rerun):5}  {paths.run_name(spec)}  -> {out_dir}"


def run(cfg: DictConfig) -> Results:
    """One point; its errors raise (``ConfigError``: the user's input)."""
    (results,) = _run_points([(cfg, contextlib.nullcontext)], alone=True)
    assert results is not None
    return results


def run_together(cfg: DictConfig, points: Sequence[sweep.SharedPoint]) -> list[Results | None]:
    """A job's several points (``sweep.shared_points``; ``cfg`` is the first's, as Hydra composed
    it), each answered as ``run`` would; a point that fails is recorded failed and the others go
    on. Returns each point's results (None for a failed one)."""
    members = [(cfg, contextlib.nullcontext)]
    members += [(point.task_config(), partial(sweep.as_point, point)) for point in points[1:]]
    return _run_points(members, alone=False)


def _run_points(members: Sequence[tuple[DictConfig, Identity]], alone: bool) -> list[Results | None]:
    outcomes: list[Results | None] = [None] * len(members)
    with contextlib.ExitStack() as locks:
        points: dict[int, _Point] = {}
        for index, (cfg, identity) in enumerate(members):
            with identity(), _failures_recorded(alone, identity):
                started = _start(cfg, identity, locks)
                if isinstance(started, run_directory.Skip):
                    outcomes[index] = started.results
                else:
                    points[index] = started
        if not points:
            return outcomes
        active = list(points.values())
        try:
            finished = _answer_points(active, alone)
        except Exception as err:  # common to every point: the data, the model
            if sweep.interrupts_the_job(err):
                raise
            if not alone:
                log.exception("this job's %d points failed", len(active))
            for point in active:
                _failed(point, err, record=not alone)
            if alone:
                raise
            return outcomes
        for index, point in points.items():
            if point in finished:
                outcomes[index] = finished[point]
    return outcomes


def _start(cfg: DictConfig, identity: Identity, locks: contextlib.ExitStack) -> _Point | run_directory.Skip:
    """Check a point's config and take its run directory, or say why it is skipped."""
    spec = validate(cfg)
    out_dir = paths.run_dir(cfg.paths.results_root, spec)
    skip = run_directory.prepare(out_dir, spec, cfg.rerun)
    if skip is not None:
        sweep.record_job("skipped", out_dir, note=skip.note)
        return skip
    log.info("run %s/%s/%s -> %s", spec.dataset, spec.model, spec.press, out_dir)
    config = effective_config(cfg, spec.knobs)
    locks.enter_context(RunLock(out_dir))
    sweep.record_job(sweep.STARTED, out_dir)
    return _Point(cfg, identity, spec, out_dir, config)


@contextlib.contextmanager
def _failures_recorded(alone: bool, identity: Identity, point: _Point | None = None) -> Iterator[None]:
    """Alone, a point's error goes up to ``run.py``; in a job of several it fails that point."""
    try:
        yield
    except Exception as err:
        if alone or sweep.interrupts_the_job(err):
            raise
        log.exception("a point of this job failed; the others go on")
        if point is None:
            with identity():
                sweep.record_job("failed", error=err)
        else:
            _failed(point, err)


def _failed(point: _Point, err: BaseException, record: bool = True) -> None:
    """Mark a started point failed: in ``jobs.jsonl`` (alone, ``run.py`` does), and on W&B."""
    if record:
        with point.identity():
            sweep.record_job("failed", point.out_dir, error=err)
    _mirror(point, None)


def _answer_points(points: list[_Point], alone: bool) -> dict[_Point, Results]:
    """Answer every point's samples; finish each point (results, W&B, ``jobs.jsonl``)."""
    cfg = points[0].cfg  # the data, model and prompt settings every point of a job shares
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    samples = _samples(cfg)
    opened = []
    for point in points:
        with point.identity(), _failures_recorded(alone, point.identity, point):
            _open_predictions(point, samples)
            opened.append(point)
    if not opened:
        return {}
    loaded = load_model_once(cfg.model)
    ready = []
    for point in opened:
        with point.identity(), _failures_recorded(alone, point.identity, point):
            point.press = build_press(point.cfg.press)
            ready.append(point)

    memory.reset_peak_gpu()
    loop_start = time.perf_counter()
    todo = sum(1 for point in ready for s in samples if s.id not in point.done)
    progress = Progress(todo, done_before=len(ready) * len(samples) - todo)
    for record in _answer(cfg, loaded, ready, samples):
        progress.update(1, failed=1 if record.get("error") else 0)
    progress.close()
    total_s = time.perf_counter() - loop_start

    made_by = provenance.collect(loaded.model)
    finished = {}
    for point in ready:
        with point.identity(), _failures_recorded(alone, point.identity, point):
            ordered = [point.done[s.id] for s in samples]
            point_made_by = {
                **made_by,
                "answers_by_code_version": provenance.answers_by_code_version(ordered),
            }
            finished[point] = run_results.finish(
                point.out_dir,
                point.spec,
                point.cfg.seed,
                point.config,
                ordered,
                samples,
                point.started_at,
                total_s,
                point_made_by,
            )
            _mirror(point, finished[point])
            sweep.record_job("done", point.out_dir)
    return finished


def _open_predictions(point: _Point, samples: list[Sample]) -> None:
    """What the point already answered (a failed sample is answered again). Files an earlier
    run left are checked before the weights load; a damaged one is the user's to mend (the
    message says where and how), never ours to rewrite."""
    run_directory.check_results_path(point.out_dir)
    point.predictions = PredictionLog(point.out_dir / paths.PREDICTIONS_FILE)
    try:
        earlier = point.predictions.read({s.id: s.task for s in samples})
    except ValueError as err:
        raise ConfigError(str(err)) from err
    point.done = {k: r for k, r in earlier.items() if not r.get("error")}
    point.predictions.repair()
    if point.done:
        log.info(
            "resuming: %d of %d samples already answered in %s", len(point.done), len(samples), point.out_dir
        )
        provenance.warn_of_other_code(point.done.values())


def _mirror(point: _Point, results: Results | None) -> None:
    """W&B mirrors the point's finished files (or marks it failed). Opened only now, one point
    at a time: W&B holds one run per process, and a job may run several points."""
    with point.identity():
        tracker = start_tracker(point.cfg.logger, paths.run_name(point.spec), point.config, point.out_dir)
        if results is not None:
            tracker.log_results(results, point.out_dir / paths.PREDICTIONS_FILE)
        tracker.finish(failed=results is None)


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


def _answer(
    cfg: DictConfig, loaded: LoadedModel, points: list[_Point], samples: list[Sample]
) -> Iterator[Prediction]:
    """Answer, prefill group by prefill group, each sample some point has not answered; each
    record is appended to its point's ``predictions.jsonl`` as it is made, then yielded.

    Points whose presses can share a prefill get one (``engine.answer_shared``); a point alone
    in its set prefills as a run of its own. A prefill that raises (e.g. CUDA out of memory on
    one very long context) is recorded failed for its points and the job goes on; the next
    start retries it. The scheduler's interruption is not a failure."""
    template_args = cfg.model.get("chat_template_kwargs")
    chat_template_kwargs = OmegaConf.to_container(template_args) if template_args is not None else {}
    attention = cfg.model.attn_implementation
    sets = [
        [points[i] for i in members]
        for members in engine.sharing_sets(loaded.model, [p.press for p in points])
    ]
    todo = [s for s in samples if any(s.id not in p.done for p in points)]
    for group in engine.prefill_groups(todo, cfg.compress_questions):
        lengths = [cfg.max_new_tokens or s.max_new_tokens for s in group]
        for members in sets:
            active = [p for p in members if any(s.id not in p.done for s in group)]
            if not active:
                continue
            try:
                prompt = engine.encode(loaded.tokenizer, group, cfg.compress_questions, chat_template_kwargs)
                restore_attention(loaded.model, attention)  # as a run of these points alone starts
                answers = _prefill_and_answer(loaded, active, prompt, lengths)
                records = [
                    [run_results.answered(p.spec.dataset, s, a) for s, a in zip(group, own, strict=True)]
                    for p, own in zip(active, answers, strict=True)
                ]
            except Exception as err:
                if sweep.interrupts_the_job(err):
                    raise
                log.exception("%d sample(s) failed (%s): recorded, the run goes on", len(group), group[0].id)
                records = [[run_results.failed(s, err) for s in group] for _ in active]
                engine.release_memory()
            for point, own in zip(active, records, strict=True):
                for record in own:
                    if record["id"] in point.done:
                        continue  # answered before: its record stands
                    point.predictions.append(record)
                    point.done[record["id"]] = record
                    yield record


def _prefill_and_answer(
    loaded: LoadedModel, points: list[_Point], prompt: engine.Prompt, lengths: list[int]
) -> list[list[engine.Answer]]:
    kv_budgets = [p.spec.knobs["kv_budget"] for p in points]
    if len(points) == 1:
        return [
            engine.answer(loaded.model, loaded.tokenizer, points[0].press, prompt, lengths, kv_budgets[0])
        ]
    presses = [p.press for p in points]
    batch = points[0].cfg.get(BATCH_DECODE_KEY, True)  # a setting all points of a job share
    return engine.answer_shared(
        loaded.model, loaded.tokenizer, presses, prompt, lengths, kv_budgets, batch_decode=batch
    )

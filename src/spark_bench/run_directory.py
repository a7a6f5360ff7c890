"""A run directory's life: writable, already complete, set aside on rerun.

A run's directory (``paths.run_dir``) is a function of its config, so starting a command again
finds what an earlier start left there. This module decides what that means: a complete
``results.json`` of the same config is skipped (or, made by other code, skipped with a warning
or run again under ``rerun=stale``); ``rerun=true`` moves earlier outputs to
``previous/<time>/``; an unreadable ``results.json`` is moved there too. Nothing written is
ever deleted or overwritten in place.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from spark_bench import paths, provenance
from spark_bench.config import STALE, ConfigError, RunSpec
from spark_bench.results import Results, read_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skip:
    """A point that is not run: its finished results, and why when other code made them."""

    results: Results
    note: str | None = None


def complete_results(out_dir: Path, spec: RunSpec) -> Results | None:
    """The finished results of this exact config in ``out_dir``, if any (``results.json`` is
    written once, at the end of a complete run, and counts only with no failed sample)."""
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


def made_by_this_code(results: Results) -> bool:
    """Whether a results.json was made by the code that runs now (same commit, same changes
    to it); one that does not say which code made it was not."""
    return provenance.result_code_version(results) == provenance.code_version()


def state(out_dir: Path, spec: RunSpec, rerun: bool | str) -> str:
    """What a start would do: ``todo``, ``done`` (skipped) or ``stale`` (skipped with a warning)."""
    finished = complete_results(out_dir, spec)
    if finished is None or rerun is True:
        return "todo"
    if made_by_this_code(finished):
        return "done"
    return "todo" if rerun == STALE else "stale"


def prepare(out_dir: Path, spec: RunSpec, rerun: bool | str) -> Skip | None:
    """Make ``out_dir`` ready for a run of ``spec``, or say why the point is skipped.

    Creates the directory (a clear error if it cannot be written), and moves aside what a new
    run would replace: everything under ``rerun=true`` or for a stale result under
    ``rerun=stale``, and an unreadable ``results.json`` always."""
    _check_writable(out_dir)
    if rerun is True:
        _archive_previous(out_dir)
        return None
    finished = complete_results(out_dir, spec)
    if finished is None:
        _set_aside_unreadable(out_dir / paths.RESULTS_FILE)
        return None
    if made_by_this_code(finished):
        log.info("skipping %s: it holds a complete results.json of this config (rerun=true forces)", out_dir)
        return Skip(finished)
    made_by, now = provenance.result_code_version(finished), provenance.code_version()
    if rerun != STALE:
        log.warning(
            "skipping %s: it holds a complete results.json of this config, but made by other code "
            "(%s; this is %s): rerun=stale runs such points again, rerun=true every point",
            out_dir,
            made_by or provenance.UNRECORDED,
            now,
        )
        return Skip(finished, note=f"stale: made by {made_by or 'unrecorded code'}")
    log.info("rerun=stale: %s was made by other code (%s; this is %s)", out_dir, made_by, now)
    _archive_previous(out_dir)
    return None


def check_results_path(out_dir: Path) -> None:
    """``results.json``, if there, is a file: the run ends by replacing it, which would fail on
    anything else after every sample has been answered."""
    path = out_dir / paths.RESULTS_FILE
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"{path} is not a file: move it out of {out_dir}, or set rerun=true to start over "
            "(earlier outputs move to previous/)"
        )


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the run directory {out_dir}: {err}; set paths.results_root"
        ) from err
    if not os.access(out_dir, os.W_OK):
        raise ConfigError(f"the run directory {out_dir} is not writable; set paths.results_root")


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
    """Move earlier outputs to ``previous/<time>/`` (nothing written is lost)."""
    earlier = [
        out_dir / name for name in (paths.RESULTS_FILE, paths.PREDICTIONS_FILE) if (out_dir / name).exists()
    ]
    if not earlier:
        return
    archive = _archive_dir(out_dir)
    archive.mkdir(parents=True)
    for path in earlier:
        path.rename(archive / path.name)
    log.info("rerun: earlier outputs moved to %s", archive)

"""Experiment tracking: W&B mirrors what the run wrote, never the other way round.

A tracking failure (no network, no login, wandb missing) warns and the benchmark goes on;
results are already on disk by the time anything is logged.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOGGERS = ("none", "wandb")


class Tracker:
    """The no-op tracker (``logger=none``) and the interface of every tracker."""

    def log_results(self, results: Mapping[str, Any]) -> None:
        """Mirror a finished ``results.json``."""

    def finish(self, failed: bool = False) -> None:
        """Close the run (marked failed if the benchmark raised)."""


class WandbTracker(Tracker):
    def __init__(self, settings: Mapping[str, Any], name: str, config: Mapping[str, Any], run_dir: Path):
        self._run = None
        try:
            import wandb

            run_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=settings["project"],
                entity=settings.get("entity"),
                group=settings.get("group"),
                tags=list(settings.get("tags") or []),
                mode=os.environ.get("WANDB_MODE") or settings["mode"],
                name=name,
                config=dict(config),
                dir=str(run_dir),
                reinit="finish_previous",  # one W&B run per Hydra job, even in one process
            )
        except Exception as err:  # tracking must never cost a benchmark run
            warnings.warn(f"W&B tracking disabled: {err}", stacklevel=2)

    def log_results(self, results: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            summary = {f"scores/{k}": v for k, v in results["scores"].items()}
            summary |= {f"memory/{k}": v for k, v in results["memory"].items() if v is not None}
            summary |= {f"timing/{k}": v for k, v in results["timing"].items()}
            summary["n_samples"] = results["run"]["n_samples"]
            self._run.summary.update(summary)
        except Exception as err:
            warnings.warn(f"W&B logging failed: {err}", stacklevel=2)

    def finish(self, failed: bool = False) -> None:
        if self._run is None:
            return
        try:
            self._run.finish(exit_code=1 if failed else 0)
        except Exception as err:
            warnings.warn(f"W&B finish failed: {err}", stacklevel=2)
        self._run = None


def start_tracker(
    settings: Mapping[str, Any], name: str, config: Mapping[str, Any], run_dir: Path
) -> Tracker:
    kind = settings["name"]
    if kind == "none":
        return Tracker()
    if kind == "wandb":
        return WandbTracker(settings, name, config, run_dir)
    raise ValueError(f"logger={kind!r} is not one of {list(LOGGERS)}")

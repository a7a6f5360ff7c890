"""Experiment tracking: W&B mirrors what the run wrote, never the other way round.

One W&B run per sweep point (a relaunched or requeued point continues its run, by an id derived
from its run directory), named from the config choices and knobs, grouped by sweep (the
multirun's sweep directory, unless ``logger.group`` is set), with the resolved config; at the
end the scores, breakdown, memory and timings as summary and the per-sample predictions as a
table, read back from the files the run wrote; the results' provenance (code, library
versions, device, SLURM job) joins the config. A tracking failure (no network, no login,
wandb missing) warns and the benchmark goes on; results are already on disk by the time
anything is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spark_bench import paths

log = logging.getLogger(__name__)

LOGGERS = ("none", "wandb")
RUN_ID_LENGTH = 20  # hex digits of a W&B run id (W&B allows up to 64 of [a-z0-9_-])


class Tracker:
    """The no-op tracker (``logger=none``) and the interface of every tracker."""

    def log_results(self, results: Mapping[str, Any], predictions: Path | None = None) -> None:
        """Mirror a finished ``results.json`` and its ``predictions.jsonl``."""

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
                group=settings.get("group") or sweep_group(),
                tags=list(settings.get("tags") or []),
                mode=os.environ.get("WANDB_MODE") or settings["mode"],
                name=name,
                config=dict(config),
                dir=str(run_dir),
                reinit="finish_previous",  # one W&B run per Hydra job, even in one process
                id=stable_run_id(run_dir),
                resume="allow",  # a resumed or requeued point continues its W&B run
            )
        except Exception as err:  # tracking must never cost a benchmark run
            warnings.warn(f"W&B tracking disabled: {err}", stacklevel=2)

    def log_results(self, results: Mapping[str, Any], predictions: Path | None = None) -> None:
        if self._run is None:
            return
        try:
            import wandb

            if results.get("provenance"):  # what made the numbers, as in results.json
                self._run.config.update({"provenance": results["provenance"]}, allow_val_change=True)
            self._run.summary.update(summary(results))
            if predictions is not None and predictions.is_file():
                rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
                table = wandb.Table(columns=list(PREDICTION_COLUMNS))
                for row in rows:
                    table.add_data(*[_cell(row.get(column)) for column in PREDICTION_COLUMNS])
                self._run.log({"predictions": table})
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


PREDICTION_COLUMNS = (
    "id", "task", "prediction", "answers", "score", "context_tokens", "kv_cache_bytes",
    "prefill_s", "decode_s",
)  # fmt: skip


def summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """The flat summary keys of a results.json: ``scores/<task>``, ``breakdown/<scope>/<group>``,
    ``memory/<key>`` (nulls left out), ``timing/<key>``, ``n_samples``."""
    flat = {f"scores/{k}": v for k, v in results["scores"].items()}
    for scope, groups in results.get("breakdown", {}).items():
        flat |= {f"breakdown/{scope}/{g}": v for g, v in groups.items() if v is not None}
    flat |= {f"memory/{k}": v for k, v in results["memory"].items() if v is not None}
    flat |= {f"timing/{k}": v for k, v in results["timing"].items()}
    flat["n_samples"] = results["run"]["n_samples"]
    return flat


def stable_run_id(run_dir: Path) -> str:
    """The W&B run id of a run directory: the same for every start of one point (a relaunch, a
    SLURM requeue), so that W&B shows one run per point, and a new one after ``rerun=true``
    (which moves the earlier outputs to ``previous/``: a new attempt, a new W&B run)."""
    archive = run_dir / paths.ARCHIVE_DIR
    attempts = len(list(archive.iterdir())) if archive.is_dir() else 0
    key = f"{run_dir.resolve()}#{attempts}"
    return hashlib.sha256(key.encode()).hexdigest()[:RUN_ID_LENGTH]


def sweep_group() -> str | None:
    """The multirun this job belongs to (its sweep directory's name), None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return None
        return Path(hydra_cfg.sweep.dir).name
    except Exception:  # outside Hydra, or an older Hydra: no group
        return None


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def start_tracker(
    settings: Mapping[str, Any], name: str, config: Mapping[str, Any], run_dir: Path
) -> Tracker:
    kind = settings["name"]
    if kind == "none":
        return Tracker()
    if kind == "wandb":
        return WandbTracker(settings, name, config, run_dir)
    raise ValueError(f"logger={kind!r} is not one of {list(LOGGERS)}")

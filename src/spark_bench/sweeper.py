"""The multirun sweeper: Hydra's basic sweeper, and each distinct config launched once.

A grid can name one run several times: a press that reads no ``key_ratio`` (``no_press``,
``snapkv``) gets the same config, hence the same run directory, at every ``key_ratio`` of the
grid (the paper's LongBench grid: 56 points, 41 configs). Launched as they are, such points
race on SLURM, where they start together: the run lock stops all but one of them (failed
points in the summary), or, where the lock is local to a node, several jobs append to one
``predictions.jsonl``. So before anything is launched, each point's config is composed and
checked as its job would (the same ``load_sweep_config`` the launchers call, the same
``validate``), and a point whose run directory an earlier point of the grid already has is not
launched: ``jobs.jsonl`` records it as ``merged``, naming the point that runs it, and the
summary lists it. A point whose config does not validate is launched as it is, so that its job
fails with its one-line error in its own log, as any bad point does.

``<sweep dir>/points.jsonl`` lists every point of the launch (overrides, run directory, job
number or the job it is merged into), so that ``python -m spark_bench.sweep status`` can say
what each point is doing after the launching process is gone.

``hydra.sweeper.dedupe=false`` launches every point (the second of two equal points is then
skipped if the first finished before it started, or stopped by the run lock if not).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.types import Override
from omegaconf import open_dict, read_write

from spark_bench import paths, sweep
from spark_bench.config import ConfigError, validate

log = logging.getLogger(__name__)


class DedupeSweeper(BasicSweeper):
    """``hydra/sweeper=spark_bench`` (the default of ``conf/config.yaml``)."""

    def __init__(
        self, max_batch_size: int | None = None, params: dict[str, str] | None = None, dedupe: bool = True
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.dedupe = dedupe

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's points in launch batches, as Hydra's basic sweeper splits them, less the
        points merged into an earlier one. (The base class calls this through ``self``.)"""
        (points,) = BasicSweeper.split_arguments(overrides, None)
        plan = [self._plan_point(point) for point in points]
        launched = _merge(plan) if self.dedupe else _launch_all(plan)
        if not any(entry["dry_run"] for entry in plan):
            sweep.write_points(Path(self.config.hydra.sweep.dir), plan)
            for entry in plan:
                if entry["status"] == "merged":
                    sweep.record_merged(Path(self.config.hydra.sweep.dir), entry, plan[entry["merged_into"]])
        _say_merged(plan)
        return [list(batch) for batch in self.split_overrides_to_chunks(launched, max_batch_size)]

    def _plan_point(self, overrides: Sequence[str]) -> dict[str, Any]:
        """A point's run directory, resolved as its job will resolve it: the config composed by
        the launchers' own call, checked with Hydra's runtime set to this point's."""
        point: dict[str, Any] = {
            "overrides": list(overrides),
            "run_dir": None,
            "error": None,
            "dry_run": False,
        }
        assert self.hydra_context is not None and self.config is not None
        point_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        try:
            HydraConfig.instance().set_config(point_cfg)
            task_cfg = copy.deepcopy(point_cfg)  # as Hydra's run_job hands it to the task function
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            point["dry_run"] = task_cfg.get("dry_run") is True
            spec = validate(task_cfg)
            point["run_dir"] = str(paths.run_dir(task_cfg.paths.results_root, spec))
        except ConfigError as err:  # its job says so, in its log
            point["error"] = str(err)
        finally:
            HydraConfig.instance().set_config(self.config)
        return point


def _merge(plan: list[dict[str, Any]]) -> list[list[str]]:
    """Mark each point whose run directory an earlier point has as merged into that point;
    number the others in launch order (their Hydra job numbers). Returns the launched points."""
    first_of: dict[str, int] = {}  # run directory -> index in plan of the point that runs it
    launched: list[list[str]] = []
    for index, point in enumerate(plan):
        run_dir = point["run_dir"]
        if run_dir is not None and run_dir in first_of:
            point.update(status="merged", merged_into=first_of[run_dir])
            continue
        if run_dir is not None:
            first_of[run_dir] = index
        point.update(status="launched", job=len(launched))
        launched.append(point["overrides"])
    for point in plan:
        if point["status"] == "merged":
            point["job"] = plan[point["merged_into"]]["job"]
    return launched


def _launch_all(plan: list[dict[str, Any]]) -> list[list[str]]:
    for job, point in enumerate(plan):
        point.update(status="launched", job=job)
    return [point["overrides"] for point in plan]


def _say_merged(plan: list[dict[str, Any]]) -> None:
    merged = [point for point in plan if point["status"] == "merged"]
    if not merged:
        return
    common = sweep.common_overrides(plan)
    lines = [
        f"  {sweep.point_label(point['overrides'], common)}: run by #{point['job']} "
        f"{sweep.point_label(plan[point['merged_into']]['overrides'], common)}"
        for point in merged
    ]
    log.info(
        "merged at launch: %d of %d points run a config an earlier point runs (same run directory), "
        "so each distinct config is launched once (hydra.sweeper.dedupe=false launches every point):\n%s",
        len(merged),
        len(plan),
        "\n".join(lines),
    )

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

Points that differ only in their press and press knobs (same model, data, samples, seed, prompt
settings: ``config.prefill_key``) share their prefills: up to ``hydra.sweeper.points_per_job``
of them run in one job (one SLURM task), which prefills each context once and compresses and
answers it for every point (``runner.run_together``). Each point still has its own run
directory, results, ``jobs.jsonl`` lines and resume. ``hydra.sweeper.share_prefill=false``
launches one job per point.
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
from omegaconf import OmegaConf, open_dict, read_write

from spark_bench import paths, sweep
from spark_bench.checks import check_positive_int
from spark_bench.config import ConfigError, prefill_key, validate

log = logging.getLogger(__name__)


class DedupeSweeper(BasicSweeper):
    """``hydra/sweeper=spark_bench`` (the default of ``conf/config.yaml``)."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        dedupe: bool = True,
        share_prefill: bool = True,
        points_per_job: int = 8,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.dedupe = dedupe
        self.points_per_job = job_size(share_prefill, points_per_job)

    def split_arguments(self, overrides: list[Override], max_batch_size: int | None) -> list[list[list[str]]]:
        """The grid's points in launch batches, as Hydra's basic sweeper splits them, less the
        points merged into an earlier one. (The base class calls this through ``self``.)"""
        (points,) = BasicSweeper.split_arguments(overrides, None)
        plan = [self._plan_point(point) for point in points]
        dry_run = any(entry["dry_run"] for entry in plan)
        if self.dedupe:
            _merge(plan)
        _share(plan, 1 if dry_run else self.points_per_job)  # a dry run lists every point itself
        launched = _number_jobs(plan)
        if not dry_run:
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep.write_points(sweep_dir, plan)
            sweep.write_shared_jobs(sweep_dir, _shared_jobs(plan))
            for entry in plan:
                if entry["status"] == "merged":
                    sweep.record_merged(sweep_dir, entry, plan[entry["merged_into"]])
        _say_merged(plan)
        _say_shared(plan)
        return [list(batch) for batch in self.split_overrides_to_chunks(launched, max_batch_size)]

    def _plan_point(self, overrides: Sequence[str]) -> dict[str, Any]:
        """A point's run directory, resolved as its job will resolve it: the config composed by
        the launchers' own call, checked with Hydra's runtime set to this point's."""
        point: dict[str, Any] = {
            "overrides": list(overrides),
            "run_dir": None,
            "error": None,
            "dry_run": False,
            "status": "launched",
            "prefill_key": None,  # None: shares with no other point
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
            point["prefill_key"] = prefill_key(task_cfg, spec.knobs)
            point["shared"] = sweep.SharedPoint(
                list(overrides),
                OmegaConf.to_container(point_cfg.hydra.runtime.choices),
                OmegaConf.to_container(task_cfg, resolve=False),
            )
        except ConfigError as err:  # its job says so, in its log
            point["error"] = str(err)
        finally:
            HydraConfig.instance().set_config(self.config)
        return point


def job_size(share_prefill: Any, points_per_job: Any) -> int:
    """The most points one job runs, from the sweeper's two settings (checked: ConfigError)."""
    if not isinstance(share_prefill, bool):
        raise ConfigError(f"hydra.sweeper.share_prefill={share_prefill!r} must be true or false")
    check_positive_int(
        "hydra.sweeper.points_per_job",
        points_per_job,
        " (the most points one job answers from shared prefills)",
        ConfigError,
    )
    return points_per_job if share_prefill else 1


def _merge(plan: list[dict[str, Any]]) -> None:
    """Mark each point whose run directory an earlier point has as merged into that point."""
    first_of: dict[str, int] = {}  # run directory -> index in plan of the point that runs it
    for index, point in enumerate(plan):
        run_dir = point["run_dir"]
        if run_dir is not None and run_dir in first_of:
            point.update(status="merged", merged_into=first_of[run_dir])
        elif run_dir is not None:
            first_of[run_dir] = index


def _share(plan: list[dict[str, Any]], points_per_job: int) -> None:
    """Put launched points that can share their prefills (same ``prefill_key``) in jobs of up to
    ``points_per_job``, in grid order: each point but the first of its job gets ``shares_job_of``
    (the index of that first point). A job never holds one run directory twice."""
    open_job: dict[str, list[int]] = {}  # prefill key -> the points of its job being filled
    for index, point in enumerate(plan):
        key = point["prefill_key"]
        if point["status"] == "merged" or key is None:
            continue
        members = open_job.get(key)
        taken = members is not None and any(plan[i]["run_dir"] == point["run_dir"] for i in members)
        if members is None or len(members) >= points_per_job or taken:
            open_job[key] = [index]
            continue
        members.append(index)
        point["shares_job_of"] = members[0]


def _number_jobs(plan: list[dict[str, Any]]) -> list[list[str]]:
    """Number the jobs in launch order (their Hydra job numbers): the first point of each job
    is launched; a point sharing a job, or merged into another point, gets that point's job.
    Returns the launched points' overrides."""
    launched: list[list[str]] = []
    for point in plan:
        if point["status"] != "merged" and "shares_job_of" not in point:
            point["job"] = len(launched)
            launched.append(point["overrides"])
    for point in plan:
        if "shares_job_of" in point:
            point["job"] = plan[point["shares_job_of"]]["job"]
    for point in plan:
        if point["status"] == "merged":
            point["job"] = plan[point["merged_into"]]["job"]
    return launched


def _shared_jobs(plan: list[dict[str, Any]]) -> dict[int, list[sweep.SharedPoint]]:
    """Job number -> its points, for every job of more than one point."""
    jobs: dict[int, list[sweep.SharedPoint]] = {}
    for point in plan:
        if point["status"] != "merged" and point.get("shared") is not None:
            jobs.setdefault(point["job"], []).append(point["shared"])
    return {job: points for job, points in jobs.items() if len(points) > 1}


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


def _say_shared(plan: list[dict[str, Any]]) -> None:
    jobs = _shared_jobs(plan)
    if not jobs:
        return
    sharing = sum(len(points) for points in jobs.values())
    log.info(
        "sharing prefills: %d points run in %d jobs, each job prefilling a context once for all its "
        "points (hydra.sweeper.share_prefill=false: a job per point)",
        sharing,
        len(jobs),
    )

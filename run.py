"""spark_bench entry point: ``python run.py [group=choice ...] [knob=value ...]`` (see README)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from spark_bench import sweep
from spark_bench.config import ConfigError, register_resolvers
from spark_bench.models import ModelLoadError
from spark_bench.runner import plan, run, run_together

register_resolvers()
log = logging.getLogger("spark_bench")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        if cfg.dry_run:  # list what a (multi)run would do: python run.py -m +sweep=... dry_run=true
            print(plan(cfg))
            return None
        together = sweep.shared_points()  # this job answers several points of a sweep
        if together:
            results = run_together(cfg, together)[0]  # each point's failure is recorded, not raised
            return None if results is None else results["scores"]["average"]
        results = run(cfg)
    except (ConfigError, ModelLoadError) as err:  # the user's input, not our bug: no traceback
        if sweep.in_multirun():
            log.error("spark_bench: error: %s", one_line(err))  # into this point's job log
            return _failed_point(err)
        print(f"spark_bench: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if sweep.in_multirun():
            log.exception("this sweep point failed")
            return _failed_point(err)
        raise
    return results["scores"]["average"]


def one_line(err: BaseException) -> str:
    """The message of a user error on one line, whatever text it quotes (a library's message can
    span several): one line of stderr is the whole answer to a bad input."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _failed_point(err: BaseException) -> None:
    """A failed sweep point is recorded and returns, so that Hydra runs the other points and
    ends with the sweep summary (which exits 1 when a point failed)."""
    sweep.record_job("failed", error=err)


if __name__ == "__main__":
    main()

"""``python -m spark_bench.sweep status <sweep dir>``: each point's state, and the sweep summary.

Works whether or not the launching process is still there (see ``spark_bench.sweep.status``).
Exit status: 0, or 1 when a point failed (as the launcher's summary), 2 for a directory that
is not a sweep's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spark_bench import sweep
from spark_bench.sweep import status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spark_bench.sweep", description="Look at a sweep launched with `python run.py -m`."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    show = commands.add_parser(
        "status",
        help="each point's state (todo / running / done / skipped / failed / merged) and its log; "
        "writes <sweep dir>/summary.json",
    )
    show.add_argument(
        "sweep_dir", type=Path, help="the multirun's directory (multirun/<date>/<time>/ by default)"
    )
    show.add_argument("--no-sacct", action="store_true", help="do not ask SLURM's sacct about the jobs")
    args = parser.parse_args(argv)

    sweep_dir: Path = args.sweep_dir
    if not any((sweep_dir / name).is_file() for name in (sweep.POINTS_FILE, sweep.JOBS_FILE)):
        print(
            f"spark_bench: error: {sweep_dir} is not a sweep directory (it holds no {sweep.POINTS_FILE} "
            f"or {sweep.JOBS_FILE}): give the directory of a `python run.py -m` launch, "
            "multirun/<date>/<time>/ or its hydra.sweep.dir",
            file=sys.stderr,
        )
        return 2
    states = status.point_states(sweep_dir, use_sacct=not args.no_sacct)
    print(status.report(states))
    print(f"summary: {status.write_summary(sweep_dir, states)}")
    return 1 if any(state["status"] == "failed" for state in states) else 0


if __name__ == "__main__":
    sys.exit(main())

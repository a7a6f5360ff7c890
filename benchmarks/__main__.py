"""Run every benchmark, one after the other in this process, and merge their figures.

    python -m benchmarks                      # full: tens of minutes on a CPU
    python -m benchmarks --quick --json perf.json

Each script also runs on its own (``python benchmarks/<name>.py --help``).
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from pathlib import Path

from spark_bench.benchmarking import argument_parser, write_figures

SCRIPTS = ("kv_memory", "prefill_cost", "harness_overhead", "grouping", "shared_prefill", "scaling")


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("run every benchmark and merge their figures")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these")
    args = parser.parse_args(argv)
    merged: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SCRIPTS:
            print(f"\n== {name} ==", flush=True)
            out = Path(tmp) / f"{name}.json"
            script_args = ["--json", str(out)] + (["--quick"] if args.quick else [])
            if name == "scaling" and args.json:
                script_args += ["--plot", str(args.json.with_name(f"{args.json.stem}_scaling.png"))]
            importlib.import_module(f"benchmarks.{name}").main(script_args)
            merged |= json.loads(out.read_text())
    write_figures(args.json, merged)
    return merged


if __name__ == "__main__":
    main(sys.argv[1:])

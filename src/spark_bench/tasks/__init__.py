"""The benchmark registry: every module of this package that defines ``BENCHMARK``.

Adding a benchmark is one module here (a ``Benchmark`` subclass and its ``BENCHMARK``
instance, see ``base.py``) plus its ``conf/dataset/<name>.yaml``; nothing else names it.
``python -m spark_bench.tasks [benchmark]`` lists the tasks each offers.
"""

from __future__ import annotations

import importlib
import pkgutil

from spark_bench.tasks.base import ALL_TASKS, Benchmark, Row, mean_of_tasks

__all__ = ["ALL_TASKS", "BENCHMARKS", "Benchmark", "Row", "get", "mean_of_tasks", "names"]

# Modules of this package that are not benchmarks.
_INFRASTRUCTURE = {"base", "__main__"}


def _discover() -> dict[str, Benchmark]:
    found: dict[str, Benchmark] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name in _INFRASTRUCTURE:
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        benchmark = getattr(module, "BENCHMARK", None)
        if not isinstance(benchmark, Benchmark):
            raise TypeError(f"{module.__name__} defines no BENCHMARK (a spark_bench.tasks.base.Benchmark)")
        if benchmark.name in found:
            raise TypeError(f"{module.__name__}: benchmark {benchmark.name!r} is defined twice")
        found[benchmark.name] = benchmark
    return found


BENCHMARKS: dict[str, Benchmark] = _discover()


def names() -> tuple[str, ...]:
    return tuple(sorted(BENCHMARKS))


def get(name: str) -> Benchmark:
    """The benchmark of ``dataset.name``; a ValueError naming the valid ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {list(names())}")
    return BENCHMARKS[name]

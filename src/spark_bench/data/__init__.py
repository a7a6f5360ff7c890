"""Benchmark data: each benchmark's loaders, official prompts and task tables, and ``Sample``.

Which benchmark a run reads, and how, is the registry's business (``spark_bench.tasks``); the
modules here are the implementations it declares.
"""

from spark_bench.data.sample import Sample

__all__ = ["Sample"]

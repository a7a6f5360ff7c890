"""Scores identical to each benchmark's official code on the same predictions.

One module per benchmark; the registry (``spark_bench.tasks``) picks a task's metric, and
``Benchmark.summarize`` turns a run's answers into its scores and official breakdown.
"""

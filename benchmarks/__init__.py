"""Benchmarks of spark_bench: ``python -m benchmarks [--quick] [--json PATH]`` runs them all."""

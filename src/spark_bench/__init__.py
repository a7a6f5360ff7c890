"""spark_bench: a benchmarking harness for KV-cache compression, built around SparK."""

__version__ = "0.1.0"

"""Presses spark_bench adds to kvpress, and the helpers the runner uses to drive any press."""

from spark_bench.presses.budget import build_press, set_token_budget

__all__ = ["build_press", "set_token_budget"]

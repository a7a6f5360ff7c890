"""Hydra instantiates a sweeper only from a class defined under the ``hydra_plugins`` package
(it finds them by scanning that namespace); the sweeper itself is ``spark_bench.sweeper``."""

from spark_bench import sweeper


class DedupeSweeper(sweeper.DedupeSweeper):
    """``spark_bench.sweeper.DedupeSweeper``, where Hydra looks for plugins."""

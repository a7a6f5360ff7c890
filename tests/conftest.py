"""Shared fixtures: compose the real config tree, shrink it, run it on tiny models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from spark_bench.config import register_resolvers
from tests.helpers import FAST, FAST_RULER, cluster_unavailable, compose_config

register_resolvers()
TEST_SEED = 0  # every test starts from the same random state, whatever ran before it


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Seed torch, numpy and random before each test: several draw random tensors, and a test
    whose outcome depends on the order tests ran in is not a test."""
    import random

    import numpy as np
    import torch

    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    torch.manual_seed(TEST_SEED)


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config with FAST defaults and results under tmp_path."""

    def make(*overrides: str) -> DictConfig:
        ruler = not any(o.startswith("dataset=") and o != "dataset=ruler" for o in overrides)
        fast = FAST + (FAST_RULER if ruler else [])
        return compose_config([*fast, f"paths.results_root={tmp_path / 'results'}", *overrides])

    return make


@pytest.fixture(scope="session")
def count_tokens() -> Callable[[str], int]:
    """Token counts of the embedded tokenizer, as the RULER generators fit lengths."""
    from spark_bench.models import embedded_tokenizer

    tokenizer = embedded_tokenizer()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False, verbose=False))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_cluster.py), or a skip saying why not."""
    from tests.slurm_cluster import ClusterUnavailable, LocalSlurm

    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as err:
        cluster_unavailable(str(err))
    yield cluster
    cluster.stop()

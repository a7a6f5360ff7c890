"""The slurm tests' cluster: make installs it, a test never does; CI fails where others skip."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests import slurm_cluster
from tests.helpers import ROOT, cluster_unavailable


def test_a_missing_cluster_is_reported_not_installed_by_the_test(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(slurm_cluster, "BINARIES", ("no-such-slurm-binary",))
    monkeypatch.setattr(
        subprocess, "run", lambda argv, **kw: calls.append(argv) or subprocess.CompletedProcess(argv, 0)
    )
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 0)  # even as root
    with pytest.raises(slurm_cluster.ClusterUnavailable, match=r"make slurm-packages"):
        slurm_cluster.LocalSlurm(tmp_path).start()
    assert not calls  # no apt-get, no daemon


def test_in_ci_an_unavailable_cluster_fails_the_test_elsewhere_skips_it(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not root"):
        cluster_unavailable("not root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not root"):
        cluster_unavailable("not root")


def test_make_test_installs_the_cluster_packages_before_pytest():
    makefile = (ROOT / "Makefile").read_text()
    (test_rule,) = re.findall(r"^test:([^#\n]*)", makefile, re.M)
    assert "slurm-packages" in test_rule.split()
    (recipe,) = re.findall(r"^slurm-packages:.*\n\t(.*)", makefile, re.M)
    assert "tests.slurm_cluster install" in recipe
    assert "export CI=" in (ROOT / ".ci" / "run").read_text()

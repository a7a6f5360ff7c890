"""The run lock where the filesystem has no flock (NFS without a lock daemon, some FUSE and
object-store mounts): flock raises ENOLCK there, and the lock falls back to a lock directory."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import subprocess
import sys

import pytest

from spark_bench import run_lock
from spark_bench.config import ConfigError
from spark_bench.run_lock import FALLBACK_LOCK, LOCK_FILE, RunLock
from tests.helpers import ROOT


@pytest.fixture
def no_flock(monkeypatch):
    """flock as on a filesystem without it; the no-flock warning not yet given in this process."""

    def refuse(*_args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(run_lock, "_WARNED", set())


def held_by(pid: int, host: str) -> str:
    return rf"another process \(pid {pid} on host {re.escape(host)}\) is running this config in "


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_without_flock_a_lock_directory_excludes_a_second_process(tmp_path, no_flock, caplog):
    with caplog.at_level(logging.WARNING, logger=run_lock.__name__), RunLock(tmp_path):
        assert (tmp_path / FALLBACK_LOCK).is_dir()
        with pytest.raises(ConfigError, match=held_by(os.getpid(), socket.gethostname())):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / FALLBACK_LOCK).exists()  # released
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "has no flock" in warning and "No locks available" in warning

    with caplog.at_level(logging.WARNING, logger=run_lock.__name__), RunLock(tmp_path):  # taken again
        assert (tmp_path / FALLBACK_LOCK).is_dir()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # said once


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS])
def test_every_no_flock_error_falls_back(tmp_path, monkeypatch, code):
    def refuse(*_args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with RunLock(tmp_path):
        assert (tmp_path / FALLBACK_LOCK).is_dir()
    assert not (tmp_path / FALLBACK_LOCK).exists()


@pytest.mark.subprocess
def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path, no_flock, caplog):
    # a real process takes the fallback lock and dies without releasing it
    script = (
        "import errno, fcntl, os, sys\n"
        "from pathlib import Path\n"
        "from spark_bench.run_lock import RunLock\n"
        "def refuse(*_args):\n"
        "    raise OSError(errno.ENOLCK, 'No locks available')\n"
        "fcntl.flock = refuse\n"
        "RunLock(Path(sys.argv[1])).__enter__()\n"
        "os._exit(0)\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True)
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert (tmp_path / FALLBACK_LOCK).is_dir()

    with caplog.at_level(logging.WARNING, logger=run_lock.__name__), RunLock(tmp_path):
        owner = run_lock.read_owner(tmp_path / FALLBACK_LOCK)
        assert owner is not None and owner["pid"] == os.getpid()
    assert "taking over" in caplog.text and "is not running" in caplog.text
    assert not (tmp_path / FALLBACK_LOCK).exists()


@pytest.mark.subprocess
def test_a_lock_from_another_host_is_never_taken_over(tmp_path, no_flock, monkeypatch):
    stranger = {"host": "node-17", "pid": exited_pid(), "started": "2025-01-01T00:00:00+00:00"}
    with monkeypatch.context() as patch:
        patch.setattr(run_lock, "_owner", lambda: stranger)
        RunLock(tmp_path).__enter__()  # held, as by a job on another node
    with pytest.raises(ConfigError, match=held_by(stranger["pid"], "node-17")) as raised:
        RunLock(tmp_path).__enter__()
    message = str(raised.value)
    assert str(tmp_path / FALLBACK_LOCK) in message and "delete it" in message
    assert (tmp_path / FALLBACK_LOCK).is_dir()  # left as it was


def test_with_flock_a_second_lock_names_the_holder_and_no_lock_directory_is_made(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match=held_by(os.getpid(), socket.gethostname())):
            RunLock(tmp_path).__enter__()
        assert (tmp_path / LOCK_FILE).is_file() and not (tmp_path / FALLBACK_LOCK).exists()
    with RunLock(tmp_path):  # released: taken again
        pass

"""One process per run directory, on any filesystem.

A second process started with the same config must stop with a clear error instead of
interleaving its answers with the first's in ``predictions.jsonl``. The lock is an flock on
``<run dir>/.lock``: the kernel releases it when the holder dies, even by SIGKILL. (On NFS an
flock may only be local to a node; the sweeper starts each distinct config of a sweep once, so
a sweep never races itself.)

Some filesystems have no flock at all (NFS mounted without a lock daemon, FUSE and object-store
mounts): there flock fails with ENOLCK, EOPNOTSUPP, EINVAL, ENOSYS, ... for every caller, and
the lock falls back to a lock directory ``<run dir>/.lock.d`` that holds its owner (host, pid,
start time). It appears whole, by a rename of a directory prepared beside it (atomic, NFS
included), so a reader never sees a lock without its owner. Nothing releases it when its holder
is killed: a lock whose process is gone from this same host is taken over with a warning; one
from another host cannot be checked from here, so the error names it, to be deleted by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from spark_bench.config import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
FALLBACK_LOCK = ".lock.d"
OWNER_FILE = "owner.json"
# A process's start time is known to about a second (the boot time it is counted from is in
# whole seconds): a process that started later than this after a lock was taken reuses the pid
# of the lock's dead owner.
PID_START_SLACK_S = 2.0
# Filesystems (mount points) already said to have no flock: the warning comes once per process.
_WARNED: set[str] = set()


class RunLock:
    """Held while a run writes its directory; a second holder gets a ConfigError naming the
    first (pid and host)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self.fallback = self.out_dir / FALLBACK_LOCK
        self._handle: Any = None
        self._token: str | None = None  # the fallback lock's token while this lock holds it

    def __enter__(self) -> RunLock:
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by another process
            handle.seek(0)
            holder = _parse_owner(handle.read())
            handle.close()
            raise _held(holder, self.out_dir) from None
        except OSError as err:  # this filesystem has no flock
            handle.close()
            _warn_no_flock(self.out_dir, err)
            self._token = _take_fallback(self.fallback, self.out_dir)
            return self
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_owner()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        if self._token is not None:
            _release_fallback(self.fallback, self._token)
            self._token = None


def read_owner(lock_dir: Path) -> dict[str, Any] | None:
    """The owner record of a fallback lock directory, or None if it has none (or no longer exists)."""
    try:
        return _parse_owner((Path(lock_dir) / OWNER_FILE).read_text())
    except OSError:
        return None


def _owner() -> dict[str, Any]:
    """Who takes a lock: this host and process, and when."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.now(timezone.utc).isoformat(),
    }


def _parse_owner(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {"pid": text}  # a .lock written by an earlier version: the pid alone
    return owner if isinstance(owner, dict) else {"pid": text}


def _held(holder: dict[str, Any] | None, out_dir: Path, lock: Path | None = None) -> ConfigError:
    """The error for a config another process runs; with ``lock``, how to remove a dead one's."""
    holder = holder or {}
    message = (
        f"another process (pid {holder.get('pid', 'unknown')} on host {holder.get('host', 'unknown')}) "
        f"is running this config in {out_dir}: wait for it to finish or stop it; the same command "
        "afterwards continues its work"
    )
    if lock is not None:
        message += (
            f". This filesystem has no flock, so the lock is the directory {lock}, which its process "
            "leaves behind if killed: if no such process runs, delete it"
        )
    return ConfigError(message)


def _warn_no_flock(directory: Path, err: OSError) -> None:
    mount, fstype = _filesystem(directory)
    if mount in _WARNED:
        return
    _WARNED.add(mount)
    log.warning(
        "the filesystem of %s (%s at %s) has no flock (%s): run locks there are lock directories "
        "(%s), which a killed run leaves behind; this host takes over its own dead runs' locks, "
        "another host's must be deleted by hand",
        directory,
        fstype,
        mount,
        err,
        FALLBACK_LOCK,
    )


def _filesystem(path: Path) -> tuple[str, str]:
    """The mount point holding ``path`` and its filesystem type (``nfs4``, ``fuse.s3fs``)."""
    resolved = str(Path(path).resolve())
    best = ("/", "unknown")
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, part.fstype)
    return best


def _take_fallback(lock_dir: Path, out_dir: Path) -> str:
    """Create the lock directory with our owner record in it; return our token. A stale lock
    of this host is taken over once; any other holder is an error."""
    for _ in range(2):  # a second try after taking over a stale lock
        token = uuid.uuid4().hex
        staging = lock_dir.with_name(f"{FALLBACK_LOCK}.{token}")
        staging.mkdir()
        (staging / OWNER_FILE).write_text(json.dumps({**_owner(), "token": token}))
        try:
            os.rename(staging, lock_dir)  # fails if a lock directory (never empty) is there
            return token
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not lock_dir.exists():
                raise
        holder = read_owner(lock_dir)
        if holder is None or not _is_stale(holder):
            raise _held(holder, out_dir, lock_dir)
        _remove_stale(lock_dir, holder, out_dir)
    raise _held(read_owner(lock_dir), out_dir, lock_dir)


def _is_stale(holder: dict[str, Any]) -> bool:
    """Whether a lock's owner is a process of this host that no longer runs."""
    if holder.get("host") != socket.gethostname():
        return False  # cannot be checked from here
    try:
        process = psutil.Process(int(holder["pid"]))
        started = datetime.fromisoformat(holder["started"]).timestamp()
        return process.create_time() > started + PID_START_SLACK_S  # the pid is someone else's now
    except psutil.NoSuchProcess:
        return True
    except (KeyError, ValueError, TypeError, psutil.Error):
        return False  # an owner record we cannot read: not ours to judge


def _remove_stale(lock_dir: Path, holder: dict[str, Any], out_dir: Path) -> None:
    """Move a dead process's lock aside and delete it; the move is atomic, so of two processes
    taking over one stale lock only one moves it."""
    grave = lock_dir.with_name(f"{FALLBACK_LOCK}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(lock_dir, grave)
    except FileNotFoundError:
        return  # another process removed it first
    moved = read_owner(grave)
    if moved is None or moved.get("token") != holder.get("token"):
        # Between our check and the move, another process took the lock over: give it back.
        with contextlib.suppress(OSError):
            os.rename(grave, lock_dir)
        raise _held(moved, out_dir, lock_dir)
    log.warning(
        "taking over the run lock %s: its owner, pid %s on this host (since %s), is not running",
        lock_dir,
        holder.get("pid"),
        holder.get("started"),
    )
    shutil.rmtree(grave, ignore_errors=True)


def _release_fallback(lock_dir: Path, token: str) -> None:
    holder = read_owner(lock_dir)
    if holder is None or holder.get("token") != token:
        log.warning("the run lock %s is no longer this process's (taken over?): left as it is", lock_dir)
        return
    grave = lock_dir.with_name(f"{FALLBACK_LOCK}.done.{token}")
    os.rename(lock_dir, grave)  # out of the way at once, so the lock is never seen half deleted
    shutil.rmtree(grave, ignore_errors=True)

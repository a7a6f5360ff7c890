"""What produced a result: code, libraries, machine, scheduler job (``results.json`` ``provenance``).

Two results of one config compare only if the code that made them did too, so a run records
the spark_bench commit *and* whether its checkout differed from that commit (with a hash of
the difference), the library versions that decide the numbers, the device, the model's dtype
and attention implementation as loaded, and the SLURM job. ``code_version`` condenses the
first two into one string, which the runner compares to tell a stale result from a current one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The libraries whose versions decide a run's numbers (and spark_bench itself).
LIBRARIES = ("torch", "transformers", "kvpress", "datasets", "spark_bench")
# The parts of a checkout that decide a run's outputs: a change elsewhere (notebooks, docs,
# results written inside the checkout) does not make results made before it stale.
CODE_PATHS = ("src", "conf", "sweeps", "run.py", "pyproject.toml")
# Letters of the diff hash kept in ``code_version`` (as git's short sha keeps 12 of the sha).
SHORT_HASH = 12
# SLURM's environment variables of a job, by the field they fill.
SLURM_VARIABLES = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "cluster": "SLURM_CLUSTER_NAME",
    "node": "SLURMD_NODENAME",
}
# The fields that become columns of results.load_results's frame, by column name.
FRAME_COLUMNS = {
    "code_version": ("code_version",),
    **{f"{name}_version": ("versions", name) for name in ("torch", "transformers", "kvpress", "datasets")},
    "device": ("device", "gpu"),
    "slurm_job_id": ("slurm", "job_id"),
}
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")
DRIVER_VERSION = re.compile(r"\b\d+\.\d+(?:\.\d+)?\b")
GIT_TIMEOUT_S = 20
# The code_version of an answer written before answers recorded theirs.
UNRECORDED = "unrecorded"

log = logging.getLogger(__name__)


def collect(model: Any | None = None) -> dict[str, Any]:
    """The provenance block of a results.json; ``model`` is the loaded transformers model."""
    git = git_state()
    return {
        "code_version": code_version(),
        "git": git,
        "versions": versions(),
        "device": device(),
        "dtype": None if model is None else str(model.dtype).removeprefix("torch."),
        "attn_implementation": None if model is None else model.config._attn_implementation,
        "host": socket.gethostname(),
        "slurm": slurm_job(),
    }


@functools.cache
def versions() -> dict[str, str | None]:
    """Python and the library versions (None for one not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def code_version() -> str:
    """The code that runs, in one string: ``<sha>`` for a clean checkout, ``<sha>+dirty.<diff
    hash>`` for a changed one, ``spark_bench <version>`` for an install that is no checkout."""
    git = git_state()
    if git["sha"] is None:
        return f"spark_bench {versions()['spark_bench']}"
    if git["dirty"]:
        return f"{git['sha'][:SHORT_HASH]}+dirty.{git['diff_sha256'][:SHORT_HASH]}"
    return git["sha"][:SHORT_HASH]


def result_code_version(results: dict[str, Any]) -> str | None:
    """The ``code_version`` a results.json was made by (from its git sha alone for one written
    before provenance was recorded; None when it says nothing)."""
    recorded = (results.get("provenance") or {}).get("code_version")
    if recorded is not None:
        return recorded
    sha = results.get("run", {}).get("git_sha")
    return sha[:SHORT_HASH] if sha else None


def now() -> str:
    """The current UTC time as a results.json records it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def answers_by_code_version(answers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of a run's answers each code version made (a resumed run may mix several)."""
    return dict(Counter(answer.get("code_version", UNRECORDED) for answer in answers))


def warn_of_other_code(earlier: Iterable[Mapping[str, Any]]) -> None:
    """Say when a resumed run's earlier answers were made by other code (a fix landed between
    a killed job and its relaunch): the results would mix both. results.json counts them."""
    current = code_version()
    others = {v: n for v, n in answers_by_code_version(earlier).items() if v != current}
    if others:
        log.warning(
            "resuming answers made by other code (%s; this is %s): the results will mix both "
            "(provenance.answers_by_code_version counts them); rerun=true answers every sample anew",
            ", ".join(f"{n} by {version}" for version, n in sorted(others.items())),
            current,
        )


@functools.cache
def git_state() -> dict[str, Any]:
    """``sha``, ``dirty`` and ``diff_sha256`` of the spark_bench checkout this code runs from
    (all None when it runs from an installed package). The diff covers ``CODE_PATHS``: tracked
    changes against the commit, staged or not, and untracked files there. Read once per
    process: the code a process runs is the code it imported."""
    root = _checkout_root()
    if root is None:
        return {"sha": None, "dirty": None, "diff_sha256": None}
    sha = _git(root, "rev-parse", "HEAD").decode().strip()
    digest = hashlib.sha256(_git(root, "diff", "HEAD", "--binary", "--", *CODE_PATHS))
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS)
    names = sorted(name for name in untracked.decode().split("\0") if name)
    for name in names:
        digest.update(b"\0untracked\0" + name.encode() + b"\0")
        digest.update((root / name).read_bytes())
    dirty = bool(names) or bool(_git(root, "diff", "HEAD", "--name-only", "--", *CODE_PATHS).strip())
    return {"sha": sha, "dirty": dirty, "diff_sha256": digest.hexdigest() if dirty else None}


def _checkout_root() -> Path | None:
    """The git checkout spark_bench is imported from (an editable install), else None: a
    package installed into some other repository's tree must not report that repository."""
    package = Path(__file__).resolve().parent
    try:
        root = Path(_git(package, "rev-parse", "--show-toplevel").decode().strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return root if (root / "src" / package.name).resolve() == package else None


def _git(cwd: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S, check=True
    ).stdout


@functools.cache
def device() -> dict[str, Any]:
    """The machine's accelerator: GPU name, count, CUDA and driver version where CUDA runs,
    else the CPU model."""
    import torch  # here: reading a results.json needs no torch

    info: dict[str, Any] = {"type": "cpu", "cpu": _cpu_model(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info |= {
            "type": "cuda",
            "gpu": torch.cuda.get_device_name(0),
            "gpu_count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "driver": _nvidia_driver(),
        }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version, from the driver's own file, else nvidia-smi."""
    try:  # "NVRM version: NVIDIA UNIX [Open] Kernel Module [for x86_64]  550.54.15  <date>"
        found = DRIVER_VERSION.search(NVIDIA_DRIVER_FILE.read_text())
        if found:
            return found.group(0)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines()[0].strip() if out.stdout.strip() else None


def slurm_job() -> dict[str, str] | None:
    """The SLURM job this process runs in, None outside one."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    return {field: os.environ[name] for field, name in SLURM_VARIABLES.items() if name in os.environ}

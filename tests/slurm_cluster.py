"""A real single-node SLURM cluster on the test machine, for the tests marked ``slurm``.

Debian's ``slurmctld slurmd slurm-client slurmdbd munge mariadb-server`` (installed by ``make
test`` through ``python -m tests.slurm_cluster install``; a test never installs) run as root
with no systemd: each daemon is started by hand in a private directory with its own config,
sockets, ports and pid file, and stopped by that pid only, so nothing outside the directory is
touched. ``slurmdbd`` (on a private MariaDB) is there because submitit learns job states from
``sacct``; without accounting a cancelled job would make a multirun wait forever. ``KillWait``
is short so that ``scancel`` ends a job at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server")
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "mariadb-install-db", "sbatch", "sacct")
CLUSTER = "sbtest"
DB_USER, DB_PASSWORD = "slurm", "spark-bench-test"
START_TIMEOUT_S = 60
CRED_EXPIRE_S = 10  # requeued jobs wait this long before they may start again
# How often the schedulers look at pending jobs (slurm.conf defaults: 60 s main loop, 30 s
# backfill): a requeued job of the requeue test would otherwise idle half a minute per attempt.
SCHED_INTERVAL_S = 2


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster (the reason says why)."""


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def ensure_installed() -> None:
    """Install the Debian packages if a binary is missing (root and apt-get needed). Run by
    ``make test`` (``make slurm-packages``) before pytest starts, never by a test."""
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("not root: cannot apt-get install slurm-wlm and munge")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("no apt-get on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise ClusterUnavailable(f"apt-get install failed: {done.stderr.strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _wait(check, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = log.read_text()[-1500:] if log is not None and log.exists() else ""
    raise ClusterUnavailable(f"{what} did not come up in {START_TIMEOUT_S} s\n{tail}")


class LocalSlurm:
    """Start with ``start()``, stop with ``stop()``; ``env`` is what a client process needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.pids: dict[str, Path] = {}
        self.processes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    # -- paths ---------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def start(self) -> LocalSlurm:
        missing = missing_binaries()
        if missing:  # installing is make's job (make slurm-packages), not a test's
            raise ClusterUnavailable(
                f"{missing} not installed: `make slurm-packages` installs them (as root, with apt-get)"
            )
        for sub in ("etc", "run", "log", "state", "spool", "db"):
            self.path(sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.path("run"), 0o755)  # munged wants a socket directory it may trust
        try:
            self._start_munge()
            self._start_mariadb()
            self._start_slurmdbd()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], pid_file: Path, env: dict[str, str] | None = None) -> None:
        log = self.path("log", f"{name}.out")
        with open(log, "ab") as out:
            self.processes.append(
                subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            )
        self.pids[name] = pid_file

    def _start_munge(self) -> None:
        key = self.path("etc", "munge.key")
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = self.path("run", "munge.socket")
        self._spawn(
            "munged",
            [_sbin("munged"), "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
             f"--pid-file={self.path('run', 'munged.pid')}", f"--log-file={self.path('log', 'munged.log')}",
             f"--seed-file={self.path('state', 'munged.seed')}"],
            self.path("run", "munged.pid"),
        )  # fmt: skip
        _wait(self.munge_socket.exists, "munged", self.path("log", "munged.log"))

    def _start_mariadb(self) -> None:
        datadir, self.db_socket = self.path("db"), self.path("run", "mysqld.sock")
        self.db_port = _free_port()
        init = subprocess.run(
            [_sbin("mariadb-install-db"), f"--datadir={datadir}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            capture_output=True, text=True,
        )  # fmt: skip
        if init.returncode != 0:
            raise ClusterUnavailable(f"mariadb-install-db failed: {init.stderr[-500:]}")
        self._spawn(
            "mariadbd",
            [_sbin("mariadbd"), "--no-defaults", f"--datadir={datadir}", f"--socket={self.db_socket}",
             f"--port={self.db_port}", "--bind-address=127.0.0.1", "--user=root",
             f"--pid-file={self.path('run', 'mariadbd.pid')}",
             f"--log-error={self.path('log', 'mariadb.log')}"],
            self.path("run", "mariadbd.pid"),
        )  # fmt: skip
        _wait(self.db_socket.exists, "mariadbd", self.path("log", "mariadb.log"))
        grant = (
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
            f"GRANT ALL ON *.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;"
        )
        client = shutil.which("mariadb") or shutil.which("mysql")
        done = subprocess.run(
            [client, f"--socket={self.db_socket}", "-u", "root", "-e", grant], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise ClusterUnavailable(f"creating the accounting database user failed: {done.stderr[-500:]}")

    def _start_slurmdbd(self) -> None:
        self.dbd_port = _free_port()
        conf = self.path("etc", "slurmdbd.conf")
        conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"DbdHost={self.host}",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={self.dbd_port}",
                    "SlurmUser=root",
                    f"PidFile={self.path('run', 'slurmdbd.pid')}",
                    f"LogFile={self.path('log', 'slurmdbd.log')}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={self.db_port}",
                    f"StorageUser={DB_USER}",
                    f"StoragePass={DB_PASSWORD}",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        os.chmod(conf, 0o600)
        self._write_slurm_conf()
        env = {**os.environ, "SLURM_CONF": str(self.path("etc", "slurm.conf"))}
        # slurmdbd reads slurmdbd.conf beside $SLURM_CONF
        self._spawn("slurmdbd", [_sbin("slurmdbd"), "-D"], self.path("run", "slurmdbd.pid"), env)
        _wait(lambda: _port_open(self.dbd_port), "slurmdbd", self.path("log", "slurmdbd.log"))

    def _write_slurm_conf(self) -> None:
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        cpus = os.cpu_count() or 1
        memory_mb = max(1024, int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20) - 1024)
        self.path("etc", "slurm.conf").write_text(
            "\n".join(
                [
                    f"ClusterName={CLUSTER}",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "AuthType=auth/munge",
                    # cred_expire is also how long a requeued job waits before it may start again
                    # (120 s by default): short, so a requeue test does not wait minutes per requeue.
                    f"AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}",
                    f"StateSaveLocation={self.path('state')}",
                    f"SlurmdSpoolDir={self.path('spool')}",
                    f"SlurmctldPidFile={self.path('run', 'slurmctld.pid')}",
                    f"SlurmdPidFile={self.path('run', 'slurmd.pid')}",
                    f"SlurmctldLogFile={self.path('log', 'slurmctld.log')}",
                    f"SlurmdLogFile={self.path('log', 'slurmd.log')}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    f"SchedulerParameters=bf_interval={SCHED_INTERVAL_S},sched_interval={SCHED_INTERVAL_S}",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "DefMemPerCPU=2048",
                    "AccountingStorageType=accounting_storage/slurmdbd",
                    "AccountingStorageHost=127.0.0.1",
                    # with auth/munge this names the munge socket for the slurmdbd connection
                    f"AccountingStoragePass={self.munge_socket}",
                    f"AccountingStoragePort={self.dbd_port}",
                    "JobAcctGatherType=jobacct_gather/none",
                    "KillWait=2",
                    "ReturnToService=2",
                    "InactiveLimit=0",
                    "MinJobAge=300",
                    f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb}",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _start_slurm(self) -> None:
        self.env = {"SLURM_CONF": str(self.path("etc", "slurm.conf"))}
        env = {**os.environ, **self.env}
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i"], self.path("run", "slurmctld.pid"), env)
        _wait(lambda: _port_open(self.ctld_port), "slurmctld", self.path("log", "slurmctld.log"))
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", self.host], self.path("run", "slurmd.pid"), env)

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            return out.stdout.strip().startswith("idle")

        _wait(node_idle, "the slurmd node", self.path("log", "slurmd.log"))

    def stop(self) -> None:
        """Stop every daemon this cluster started, by its pid file, newest first."""
        for pid_file in reversed(list(self.pids.values())):
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pids.clear()
        for process in self.processes:  # reap the foreground daemons (and munged's launcher)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as stopped
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str]) -> int:
    """``python -m tests.slurm_cluster install``: the Debian packages, where this machine can
    (root, apt-get); elsewhere it says why not and the slurm tests will skip (fail in CI)."""
    if argv != ["install"]:
        print("usage: python -m tests.slurm_cluster install", file=sys.stderr)
        return 2
    try:
        ensure_installed()
    except ClusterUnavailable as err:
        print(f"SLURM test cluster packages not installed: {err}", file=sys.stderr)
        return 0
    print("SLURM test cluster packages: installed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

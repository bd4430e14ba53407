"""A single-node Slurm cluster of this machine, for the real-cluster tests (and by hand).

Debian's packages (`slurmctld slurmd slurm-client slurmdbd mariadb-server munge`), every daemon
started by hand as root in one folder, on free ports, with its PID recorded and stopped by that PID:
munged (a key of its own), MariaDB (a database of its own, reached as root over its Unix socket,
so no password exists anywhere) and slurmdbd (so sacct works), slurmctld and slurmd (no cgroups:
`proctrack/linuxproc`, `task/none`). The clients find it through `SLURM_CONF`. Fast on purpose:
short scheduler intervals, `MinJobAge` of 2 s, `KillWait` of 2 s, and
`AuthInfo=cred_expire=5`, which in Slurm is also how long a requeued job waits before it may
start again (slurm.conf(5): "This also controls how long a requeued job must wait before
starting again. The default value is 120 seconds.").

    python tests/slurm_cluster.py up DIR        # prints the export line for SLURM_CONF
    python tests/slurm_cluster.py down DIR
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server", "munge")
TOOLS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mungekey", "mariadbd", "mariadb-install-db", "sbatch",
         "sacctmgr")
NAME = "rewindci"
NODE = "rewind-node"


class Unavailable(Exception):
    """The cluster cannot run here; the message says why (the tests are skipped with it)."""


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if Path(p).exists()), None)


def missing_tools() -> list[str]:
    return [t for t in TOOLS if _which(t) is None]


def wait_for_install(log: Path, timeout_s: float) -> None:
    """Wait for a background install (CI starts one, logging to `log`, whose last line is then
    `install-done rc=N`) to end."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if "install-done" in log.read_text(errors="replace"):
            return
        time.sleep(1)
    raise Unavailable(f"the Slurm packages were still installing after {timeout_s:.0f} s ({log})")


def install() -> None:
    """apt-get update and install the packages (root only)."""
    if os.geteuid() != 0:
        raise Unavailable("Slurm's packages are not installed and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode:
            raise Unavailable(f"{' '.join(cmd[:2])} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class Cluster:
    """The daemons of one cluster folder; `env` is what a client needs (SLURM_CONF)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.pids: dict[str, int] = {}
        self.conf = self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
        log = open(self.root / f"{name}.out", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **self.env, **(env or {})})
        log.close()
        self.pids[name] = proc.pid
        (self.root / "pids.json").write_text(json.dumps(self.pids))
        return proc.pid

    def _wait(self, what: str, ok, timeout_s: float = 30) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if ok():
                return
            time.sleep(0.2)
        tails = {n: (self.root / f"{n}.log").read_text(errors="replace").strip().splitlines()[-3:]
                 for n in self.pids if (self.root / f"{n}.log").exists()}
        raise Unavailable(f"{what} did not come up within {timeout_s:.0f} s: {tails}")

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **self.env,
                                                                     "MYSQL_UNIX_PORT": str(self.root / "db.sock")},
                           timeout=60)
        if check and r.returncode:
            raise Unavailable(f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()}")
        return r

    def write_conf(self, accounting: bool) -> None:
        r, cpus = self.root, os.cpu_count() or 1
        ports = json.loads((r / "ports.json").read_text())
        memory = max(1024, int(_memory_mb() * 0.9))
        # AccountingStoragePass: the munge socket that sacct and slurmctld use to reach slurmdbd
        storage = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
                   f"AccountingStoragePort={ports['dbd']}\nAccountingStorageEnforce=associations\n"
                   f"AccountingStoragePass={r}/munge.socket\n") if accounting else \
            "AccountingStorageType=accounting_storage/none\n"
        self.conf.write_text(f"""ClusterName={NAME}
SlurmctldHost=localhost
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['d']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r}/munge.socket,cred_expire=5
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
MinJobAge=2
KillWait=2
MessageTimeout=5
SlurmctldTimeout=10
SlurmdTimeout=30
InactiveLimit=0
ReturnToService=2
MpiDefault=none
{storage}JobCompType=jobcomp/none
NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, accounting: bool = True) -> "Cluster":
        if os.geteuid() != 0:
            raise Unavailable("the test cluster runs its daemons as root, and this is not root")
        if missing := missing_tools():
            raise Unavailable(f"not installed: {', '.join(missing)} (apt-get install {' '.join(PACKAGES)})")
        r = self.root
        for d in ("ctld", "spool", "db"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "ports.json").write_text(json.dumps({"ctld": _free_port(), "d": _free_port(), "dbd": _free_port()}))
        self._run(_which("mungekey"), "--create", "--keyfile", str(r / "munge.key"), "--force")
        os.chmod(r / "munge.key", 0o600)
        self._spawn("munged", [_which("munged"), "--foreground", "--force", "--socket", str(r / "munge.socket"),
                               "--key-file", str(r / "munge.key"), "--pid-file", str(r / "munged.pid"),
                               "--seed-file", str(r / "munged.seed"), "--log-file", str(r / "munged.log")])
        self._wait("munged", lambda: (r / "munge.socket").exists())
        if accounting:
            self.start_accounting()
        self.write_conf(accounting)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._run("scontrol", "ping", check=False).stdout.count("UP") > 0)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait("slurmd", lambda: "idle" in self._run("sinfo", "-h", "-o", "%T", check=False).stdout)
        return self

    def start_controller(self, accounting: bool | None = None) -> None:
        """(Re)start slurmctld, with or without accounting (slurmdbd keeps running; its jobs are kept)."""
        if accounting is not None:
            self.write_conf(accounting)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self._run("scontrol", "ping", check=False).stdout.count("UP") > 0)
        self._run("scontrol", "reconfigure", check=False)  # slurmd takes the controller's settings too

    def start_accounting(self) -> None:
        r, ports = self.root, json.loads((self.root / "ports.json").read_text())
        sock = str(r / "db.sock")
        if not (r / "db" / "mysql").exists():
            self._run(_which("mariadb-install-db"), f"--datadir={r / 'db'}", "--user=root",
                      "--auth-root-authentication-method=socket", "--skip-test-db")
        self._spawn("mariadbd", [_which("mariadbd"), "--no-defaults", f"--datadir={r / 'db'}", f"--socket={sock}",
                                 "--skip-networking", "--user=root", f"--pid-file={r / 'mariadbd.pid'}",
                                 f"--log-error={r / 'mariadbd.log'}", "--innodb-buffer-pool-size=32M"])
        self._wait("mariadbd", lambda: Path(sock).exists())
        dbd = r / "slurmdbd.conf"
        dbd.write_text(f"AuthType=auth/munge\nAuthInfo=socket={r}/munge.socket\nDbdHost=localhost\n"
                       f"DbdPort={ports['dbd']}\nSlurmUser=root\nStorageType=accounting_storage/mysql\n"
                       f"StorageHost=localhost\nStorageUser=root\nStorageLoc=slurm_acct_db\n"
                       f"PidFile={r}/slurmdbd.pid\nLogFile={r}/slurmdbd.log\n")
        dbd.chmod(0o600)
        self.write_conf(True)  # sacctmgr finds slurmdbd through slurm.conf
        self._spawn("slurmdbd", [_which("slurmdbd"), "-D"], env={"MYSQL_UNIX_PORT": sock})  # beside SLURM_CONF
        self._wait("slurmdbd", lambda: self._run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        if NAME not in self._run("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster").stdout.split():
            self._run("sacctmgr", "-i", "add", "cluster", NAME)

    def stop_daemon(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + 2  # a test cluster: what it has not saved by then is not needed
        while time.time() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:  # not our child (a `down` from another process): poll it
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        (self.root / "pids.json").write_text(json.dumps(self.pids))

    def stop(self) -> None:
        """Cancel every job (their slurmstepd would outlive slurmd), then stop the daemons."""
        if "slurmctld" in self.pids and "slurmd" in self.pids:
            self._run("scancel", "--user", "root", check=False)
            deadline = time.time() + 5
            while time.time() < deadline and self._run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.2)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            self.stop_daemon(name)
        for pid in self.step_daemons():  # a step whose task was killed can outlive its slurmd
            os.kill(pid, signal.SIGKILL)

    def step_daemons(self) -> list[int]:
        """The slurmstepd processes of this cluster (their environment names its slurm.conf)."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "comm").read_text().startswith("slurmstepd") and \
                        f"SLURM_CONF={self.conf}\0".encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    @classmethod
    def attach(cls, root: Path) -> "Cluster":
        c = cls(root)
        c.pids = json.loads((Path(root) / "pids.json").read_text())
        return c


if __name__ == "__main__":
    action, folder = sys.argv[1], Path(sys.argv[2]).resolve()
    if action == "up":
        cluster = Cluster(folder)
        try:
            cluster.start(accounting="--no-accounting" not in sys.argv)
        except Unavailable:
            cluster.stop()
            raise
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        Cluster.attach(folder).stop()

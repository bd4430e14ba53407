"""What Slurm says, read the same way everywhere: the jobs of a study in one `squeue` query (pending,
running and recently ended jobs, with their reason and restart count), `sacct` for those that left the
queue where the cluster keeps accounting, the size of a partition's nodes (`sinfo`), the options
`sbatch` knows, and what sbatch said when it refused a submission, in one line.

Parsers take the commands' text, so tests feed them recorded outputs.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from rewind.errors import UserError

# A job is signalled SIGNAL_LEAD_S before its time limit (submitit's --signal=USR2@...), and Slurm may
# signal up to a minute earlier (sbatch(1), --signal); it then requeues itself. A time limit must leave
# it a minute of work beyond that.
SIGNAL_LEAD_S, SIGNAL_EARLY_S = 60, 60
MIN_TIME_LIMIT = (SIGNAL_LEAD_S + SIGNAL_EARLY_S) // 60 + 1

RUNNING = ("RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT")
WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "STOPPED")
# Pending reasons that never clear by themselves: the job waits forever unless it is cancelled and sent again.
STUCK = {
    "DependencyNeverSatisfied": "a run it waits for failed or was cancelled",
    "PartitionConfig": "it asks for more than the partition's nodes have (--cpus-per-job, --mem-gb, --gpus-per-job)",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "PartitionTimeLimit": "its --time-limit is above the partition's",
    "ReqNodeNotAvail": "the nodes it needs are down or drained",
    "BadConstraints": "its constraints can never be met",
    "InvalidAccount": "its account is not valid (--sbatch account=...)",
    "InvalidQOS": "its QOS is not valid (--sbatch qos=...)",
    "JobHeldAdmin": "an administrator holds it",
    "JobHeldUser": "it is held (scontrol release frees it)",
}
PER_JOB_LIMIT = re.compile(r"(Assoc|QOS)Max\w*PerJob(Limit)?$")  # a per-job maximum: never met by this job


@dataclass(frozen=True)
class Info:
    """One job as Slurm knows it."""

    state: str
    reason: str = ""
    restarts: int = 0


class Unreachable(UserError):
    """Slurm's controller did not answer."""


def stuck_reason(reason: str) -> str:
    """Why a pending job will never start ('' if its reason may clear)."""
    head = reason.split(",")[0].strip()
    if head in STUCK:
        return STUCK[head]
    return "it asks for more than a per-job limit allows" if PER_JOB_LIMIT.match(head) else ""


def _ids(job_id: str) -> list[str]:
    """'12_[0-2,5%2]' -> ['12_0', '12_1', '12_2', '12_5']; '12_3' -> ['12_3']; '12' -> ['12']."""
    m = re.fullmatch(r"(\d+)_\[([\d,\-]+)(%\d+)?\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_squeue(text: str) -> dict[str, Info]:
    """`squeue -h -r --states=all -O JobArrayID:|,State:|,Reason:|,RestartCnt:|` -> job id -> Info."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[0].strip():
            continue
        restarts = parts[3].strip()
        for job_id in _ids(parts[0].strip()):
            out[job_id] = Info(parts[1].strip(), parts[2].strip(), int(restarts) if restarts.isdigit() else 0)
    return out


def parse_sacct(text: str) -> dict[str, Info]:
    """`sacct -X -n -P -o JobID,State,Reason` -> job id -> Info (the last record of a job wins)."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 2 or not parts[0].strip() or "." in parts[0]:
            continue
        state = parts[1].split()[0] if parts[1].strip() else "UNKNOWN"  # 'CANCELLED by 0'
        for job_id in _ids(parts[0].strip()):
            out[job_id] = Info(state, parts[2].strip() if len(parts) > 2 else "")
    return out


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"{cmd[0]}: no answer within {timeout:.0f} s")


def unreachable(text: str) -> bool:
    return any(s in text for s in ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                                   "Zero Bytes were transmitted", "no answer within"))


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def query(job_ids: list[str]) -> dict[str, Info]:
    """What Slurm says of these jobs: one squeue query for all, then one sacct query for those that
    left the queue (none where sacct is missing or accounting is off). Raises Unreachable."""
    if not job_ids:
        return {}
    bases = sorted({j.split("_")[0] for j in job_ids}, key=int)
    r = _run(["squeue", "-h", "-r", "--states=all", "-j", ",".join(bases),
              "-O", "JobArrayID:|,State:|,Reason:|,RestartCnt:|"])
    if r.returncode == 127:
        raise Unreachable("squeue is not on PATH here, so the jobs' states cannot be known; run this on the "
                          "cluster's login node")
    if r.returncode and "Invalid job id" not in r.stderr:  # every job gone: squeue says so and exits 1
        message = _first_line(r.stderr) or f"squeue exited with status {r.returncode}"
        raise Unreachable(f"Slurm's controller does not answer ({message}); run the command again once "
                          "`scontrol ping` says it is UP")
    found = parse_squeue(r.stdout if not r.returncode else "")
    gone = sorted({j.split("_")[0] for j in job_ids if j not in found}, key=int)
    if gone:
        r = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Reason", "-j", ",".join(gone)])
        if not r.returncode:  # accounting off: "Slurm accounting storage is disabled", exit 1
            found.update({k: v for k, v in parse_sacct(r.stdout).items() if k not in found})
    return found


def cancel(job_ids: list[str]) -> None:
    """scancel these jobs (those already gone are no error)."""
    if job_ids:
        r = _run(["scancel", *job_ids])
        if r.returncode and unreachable(r.stderr):
            raise Unreachable(f"Slurm's controller does not answer ({_first_line(r.stderr)}); nothing was sent: "
                              "run the command again once `scontrol ping` says it is UP")


@dataclass(frozen=True)
class Nodes:
    """The largest node of a partition: CPUs, memory in MB, GPUs."""

    cpus: int
    mem_mb: int
    gpus: int


def parse_sinfo(text: str) -> dict[str, Nodes]:
    """`sinfo -h -o %P|%c|%m|%G` (a line per partition and node kind) -> partition -> its largest node;
    the default partition (marked '*') also under ''."""
    rows: dict[str, list[Nodes]] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not parts[0].strip():
            continue
        cpus, mem = re.match(r"\d*", parts[1].strip()).group(), re.match(r"\d*", parts[2].strip()).group()
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[\w.-]+)?:(\d+)", parts[3]))
        names = [parts[0].strip().rstrip("*")] + ([""] if parts[0].strip().endswith("*") else [])
        for name in names:
            rows.setdefault(name, []).append(Nodes(int(cpus or 0), int(mem or 0), gpus))
    return {name: Nodes(max(n.cpus for n in ns), max(n.mem_mb for n in ns), max(n.gpus for n in ns))
            for name, ns in rows.items()}


def partitions() -> dict[str, Nodes] | None:
    """Each partition's largest node (the default partition also under ''); None where sinfo cannot tell."""
    r = _run(["sinfo", "-h", "-o", "%P|%c|%m|%G"], timeout=30)
    if r.returncode and unreachable(r.stderr):
        raise Unreachable(f"Slurm's controller does not answer ({_first_line(r.stderr)}); nothing was submitted: "
                          "run the command again once `scontrol ping` says it is UP")
    found = parse_sinfo(r.stdout) if not r.returncode else {}
    return found or None


def parse_options(help_text: str) -> set[str]:
    """The long options in `sbatch --help` ('--account=name' -> 'account')."""
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", help_text))


def sbatch_options() -> set[str]:
    """The options this cluster's sbatch knows (empty where it does not list them)."""
    r = _run(["sbatch", "--help"], timeout=30)
    options = parse_options(r.stdout)
    return options if len(options) > 20 else set()


def refusal(text: str) -> str:
    """What sbatch said when it refused a submission, in one line."""
    lines = [re.sub(r"^sbatch:\s*(error:\s*)?", "", line.strip()) for line in text.splitlines()
             if line.strip().startswith("sbatch:")]
    lines = [line for line in lines if line]
    return lines[0] if lines else _first_line(text)


HINTS = (("account", "check --sbatch account=... (`sacctmgr show assoc user=$USER` lists yours)"),
         ("partition", "check --partition (`sinfo` lists the partitions)"),
         ("qos", "check --sbatch qos=..."),
         ("generic resource", "the partition has no such GPUs: --gpus-per-job 0 with --device cpu, or a GPU --partition"),
         ("memory", "lower --mem-gb"),
         ("node configuration", "lower --cpus-per-job, --mem-gb or --gpus-per-job to what the partition's nodes have"),
         ("time limit", "lower --time-limit"),
         ("unrecognized option", "remove it from --sbatch"))


def hint(line: str) -> str:
    """What to change when sbatch refused with `line`."""
    low = line.lower()
    return next((h for key, h in HINTS if key in low), "check --partition, --sbatch and the cluster's limits")

"""What was sent where, and the state of every job of a study: `launch/jobs.json` and one state
file per job (`launch/state/`), written by the launcher and by the jobs themselves.

States: complete (the archive holds the run), running, queued, failed (with the last line of its
log), never submitted. Only failed and never-submitted jobs are sent again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from rewind.archive.atomic import write_text
from rewind.archive.lock import FolderLock
from rewind.launch import Job, Plan, done

FAILED_SLURM = ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE")


def _safe(name: str) -> str:
    return name.replace("/", "__")


def submitted(plan: Plan) -> dict[str, dict[str, Any]]:
    path = plan.folder() / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record(plan: Plan, entries: dict[str, dict[str, Any]]) -> None:
    """Add (or replace) the records of submitted jobs, by job name."""
    with FolderLock(plan.folder(), wait=True):
        table = submitted(plan)
        table.update({name: {**e, "submitted": time.strftime("%Y-%m-%d %H:%M:%S")} for name, e in entries.items()})
        write_text(plan.folder() / "jobs.json", json.dumps(table, indent=1, sort_keys=True))
        for name in entries:  # a resubmitted job starts from no state
            (plan.folder() / "state" / f"{_safe(name)}.json").unlink(missing_ok=True)


def mark(plan: Plan, job: Job, state: str, last_line: str = "") -> None:
    """Written by the job itself: running (with its pid and host), finished or failed; `attempt`
    counts its starts since it was submitted (a requeued job starts again)."""
    attempt = _state_file(plan, job).get("attempt", 0) + (state == "running")
    write_text(plan.folder() / "state" / f"{_safe(job.name)}.json",
               json.dumps({"state": state, "pid": os.getpid(), "host": socket.gethostname(), "attempt": attempt,
                           "last_line": last_line, "time": time.strftime("%Y-%m-%d %H:%M:%S")}))


def _state_file(plan: Plan, job: Job) -> dict[str, Any]:
    path = plan.folder() / "state" / f"{_safe(job.name)}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: trust what it wrote
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_line(log: str | None) -> str:
    """The last non-empty line of a log file (or '')."""
    if not log or not Path(log).exists():
        return ""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _slurm_state(job_id: str, folder: str) -> str:
    """What sacct says of the job (UNKNOWN where there is no sacct to ask)."""
    if shutil.which("sacct") is None:
        return "UNKNOWN"
    try:
        import submitit

        return submitit.SlurmJob(folder=folder, job_id=job_id).state
    except Exception:  # noqa: BLE001  sacct missing or silent: nothing more to learn
        return "UNKNOWN"


def state(plan: Plan, job: Job, table: dict[str, dict[str, Any]] | None = None) -> tuple[str, str]:
    """(state, detail): detail is the last line of a failed job's log, else where its logs are."""
    if done(job):
        return "complete", ""
    entry = (submitted(plan) if table is None else table).get(job.name)
    if entry is None:
        return "never submitted", ""
    own, log = _state_file(plan, job), entry.get("stderr")
    if own.get("state") == "failed":
        return "failed", own.get("last_line") or last_line(log)
    if entry["executor"] == "slurm":
        slurm = _slurm_state(entry["job_id"], entry["folder"])
        if slurm.split(" ")[0] in FAILED_SLURM:
            return "failed", f"slurm: {slurm}; {last_line(log)}".rstrip("; ")
        if own.get("state") == "finished":
            return "failed", last_line(log) or "the job ended without completing its run"
        return ("running" if own.get("state") == "running" else "queued"), f"logs: {log}"
    # local: the job's own process, or before it starts the driver that will start it
    if own.get("state") == "running":
        if _alive(own["pid"], own["host"]):
            return "running", f"logs: {log}"
        return "failed", last_line(log) or "its process ended without completing the run"
    if own.get("state") == "finished":
        return "failed", last_line(log) or "the job ended without completing its run"
    if _alive(entry.get("driver_pid", -1), entry.get("host", "")):
        return "queued", f"started by pid {entry.get('driver_pid')}"
    return "failed", last_line(log) or "the local launcher stopped before this job ran; run the command again"


def states(plan: Plan) -> list[dict[str, str]]:
    table = submitted(plan)
    rows = []
    for job in plan.jobs:
        s, detail = state(plan, job, table)
        entry = table.get(job.name, {})
        rows.append({"job": job.name, "state": s, "job_id": entry.get("job_id", ""), "detail": detail,
                     "path": job.path})
    return rows

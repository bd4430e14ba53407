"""What was sent where, and the state of every job of a study: from the archive (complete), the job
records (`launch/jobs.json`, keyed by each job's identity), what each job wrote itself
(`launch/state/`), and what Slurm says (one query for the whole table) or, for local jobs, whether
their process lives.

States: complete; running; queued; requeued (waits to start again after a preemption or the end of
a time slot; its attempt counts its starts); failed (with the last line of its log); stuck (pending
for a reason Slurm never clears, with that reason); never submitted; unknown (Slurm's controller did
not answer). The study's command sends again what is never submitted, failed or stuck, and the
jobs that wait for those.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rewind.archive.lock import FolderLock
from rewind.launch import Job, Plan, done, files, slurm

RESEND = ("never submitted", "failed", "stuck")


@dataclass(frozen=True)
class State:
    state: str
    detail: str = ""
    attempt: int = 0  # starts since it was sent (a requeued job starts again)

    def label(self) -> str:
        """The state as `rewind runs show` prints it: 'requeued (attempt 2)'."""
        again = self.state == "requeued" or (self.state == "running" and self.attempt > 1)
        return f"{self.state} (attempt {self.attempt})" if again else self.state


def submitted(plan: Plan) -> dict[str, dict[str, Any]]:
    """Job identity -> its record (executor, job id, log)."""
    return files.read_records(plan.out)


def record(plan: Plan, entries: list[tuple[Job, dict[str, Any]]]) -> None:
    """Add (or replace) the records of submitted jobs; a job sent again starts from no state."""
    with FolderLock(plan.folder(), wait=True):
        table = submitted(plan)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        table.update({job.key: {**e, "name": job.name, "submitted": stamp} for job, e in entries})
        files.write_records(plan.out, table)
        for job, _ in entries:
            files.state_path(plan.out, job.key).unlink(missing_ok=True)


def slurm_job_id() -> str:
    """This process's Slurm job id ('12' or, in an array, '12_3'); '' outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def mark(plan: Plan, job: Job, state: str, last_line: str = "", **more: Any) -> None:
    """Written by the job itself: running (with its pid and host), finished or failed; `attempt` counts
    its starts since it was submitted (a requeued job starts again)."""
    try:
        own = files.read_state(plan.out, job.key)
    except files.Damaged:  # the job's own file: it writes it anew
        own = {}
    attempt = own.get("attempt", 0) + (state == "running")
    data = {**{k: v for k, v in own.items() if k in ("started", "progress")}, "state": state, "pid": os.getpid(),
            "host": socket.gethostname(), "attempt": attempt, "last_line": last_line,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"), "job_id": slurm_job_id(), **more}
    files.write_state(plan.out, job.key, data)


def own_state(plan: Plan, job: Job, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the job wrote, if it was written under its current submission."""
    own = files.read_state(plan.out, job.key)
    if entry and own.get("job_id") and entry.get("executor") == "slurm" and \
            own["job_id"] not in (entry["job_id"], entry["job_id"].split("_")[0]):
        return {}  # left by an earlier submission of the same run
    return own


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


def from_slurm(info: slurm.Info | None, own: dict[str, Any], log: str | None) -> State:
    """A Slurm job's state from what Slurm says of it (None: it left the queue and no accounting
    remembers it) and what the job itself wrote."""
    starts, restarts = own.get("attempt", 0), info.restarts if info else 0
    attempt = max(starts, restarts)
    if own.get("state") == "failed":
        return State("failed", own.get("last_line") or last_line(log), attempt)
    if info is None:
        if own.get("state") == "running":
            why = "its process ended without a word (killed, or its node failed)"
        elif own.get("state") == "finished":
            why = "the job ended without completing its run"
        else:
            why = "the job left the queue without starting (cancelled?)"
        return State("failed", "; ".join(filter(None, (why, last_line(log)))), attempt)
    if info.state in slurm.RUNNING:
        if info.state == "COMPLETING" and restarts and restarts >= starts:  # the end of a requeued attempt
            return State("requeued", "its last attempt is ending", restarts + 1)
        return State("running", f"logs: {log}", max(starts, restarts + 1))
    if info.state in slurm.WAITING:
        if stuck := slurm.stuck_reason(info.reason):
            return State("stuck", f"Slurm: {info.reason} ({stuck})", attempt)
        if info.state == "SUSPENDED":
            return State("queued", "suspended by Slurm", attempt)
        if attempt:
            return State("requeued", f"waits to start again ({info.reason})", attempt + 1)
        return State("queued", f"waits ({info.reason})" if info.reason and info.reason != "None" else "", 0)
    if info.state == "COMPLETED" or own.get("state") == "finished":
        return State("failed", last_line(log) or "the job ended without completing its run", attempt)
    why = "cancelled: a run it waits for did not complete" if info.state == "CANCELLED" and \
        info.reason.startswith("Dependency") else f"Slurm: {info.state}"
    return State("failed", "; ".join(filter(None, (why, last_line(log)))), attempt)


def from_local(entry: dict[str, Any], own: dict[str, Any]) -> State:
    """A local job's state: its own process, or before it starts the driver that will start it."""
    log, attempt = entry.get("stderr"), own.get("attempt", 0)
    if own.get("state") == "failed":
        return State("failed", own.get("last_line") or last_line(log), attempt)
    if own.get("state") == "running":
        if _alive(own["pid"], own["host"]):
            return State("running", f"logs: {log}", attempt)
        return State("failed", last_line(log) or "its process ended without completing the run", attempt)
    if own.get("state") == "finished":
        return State("failed", last_line(log) or "the job ended without completing its run", attempt)
    if _alive(entry.get("driver_pid", -1), entry.get("host", "")):
        return State("queued", f"started by pid {entry.get('driver_pid')}")
    return State("failed", last_line(log) or "the local launcher stopped before this job ran; run the command again")


class Table:
    """The state of every job of `plan`, with one Slurm query for all of them. `strict`: a controller
    that does not answer is an error (what to send cannot be known) rather than state 'unknown'."""

    def __init__(self, plan: Plan, strict: bool = False,
                 query: Callable[[list[str]], dict[str, slurm.Info]] = slurm.query):
        self.plan, self.records = plan, submitted(plan)
        self.complete = {j.key for j in plan.jobs if done(j)}
        ids = [e["job_id"] for j in plan.jobs if j.key not in self.complete
               and (e := self.records.get(j.key)) and e["executor"] == "slurm" and e["job_id"]]
        self.unreachable = ""
        try:
            self.slurm = query(ids)
        except slurm.Unreachable as e:
            if strict:
                raise
            self.slurm, self.unreachable = {}, str(e).split(";")[0]

    def entry(self, job: Job) -> dict[str, Any] | None:
        return self.records.get(job.key)

    def state(self, job: Job) -> State:
        if job.key in self.complete:
            return State("complete")
        entry = self.entry(job)
        if entry is None:
            return State("never submitted")
        own = own_state(self.plan, job, entry)
        if entry["executor"] == "local":
            return from_local(entry, own)
        if self.unreachable and own.get("state") != "failed":
            return State("unknown", self.unreachable)
        return from_slurm(self.slurm.get(entry["job_id"]), own, entry.get("stderr"))


def state(plan: Plan, job: Job) -> State:
    return Table(plan).state(job)


def states(plan: Plan) -> list[dict[str, str]]:
    """One row per job: name, state (with its attempt), job id, detail, run folder."""
    table = Table(plan)
    rows = []
    for job in plan.jobs:
        s, entry = table.state(job), table.entry(job) or {}
        rows.append({"job": job.name, "state": s.label(), "job_id": entry.get("job_id", ""), "detail": s.detail,
                     "path": job.path, "kind": s.state})
    return rows

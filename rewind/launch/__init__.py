"""Executors: a study's runs trained in this process, as processes on this machine, or as Slurm jobs.

A study describes the runs it needs as a `Plan` of `Job`s, plain data: each job is one run the
archive already knows how to resume (a trunk, an IMP branch with its levels, a continuation, a
child pair, an arm, a sweep), the jobs it waits for, and the study's own arguments to train it.
The study's module trains one job (`execute(plan, job)`) and writes the study's tables from the
archive (`summarize(plan)`). With `inline` the study runs in the command's process as it always
has; `local` and `slurm` send each job that is not complete (and not already queued or running)
to submitit, in waves (`local`) or as job arrays chained with `afterok` (`slurm`), and the job
that finishes last writes the summary. The archive is the only state: a job that dies is
resubmitted by running the same command again and resumes from its last checkpoint.

Nothing a job needs is pickled beyond the path of its plan file and its name: the plan is JSON
(`launch/plan-<hash>.json` in the study folder), read back with `read_plan`; `files` has every file
of the launch folder and its validating reader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewind.archive import run as runs
from rewind.errors import UserError


@dataclass(frozen=True)
class Job:
    """One run of a study: `path` is the run folder it writes (its manifest says when it is done)."""

    name: str
    path: str
    describe: str  # what it trains, its length: for --dry-run and `rewind runs show`
    args: dict[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    levels: int = 0  # an IMP branch: complete once it holds this many levels
    marker: str = ""  # a job that writes no run folder (an analysis): complete once this file exists
    more: tuple[str, ...] = ()  # further run folders it writes (runs stacked in one job with --parallel)
    # (run folder, kind, identity) of runs it reopens by name (trunks): checked as reopening them checks
    expect: tuple[tuple[str, str, dict[str, Any]], ...] = ()

    @property
    def key(self) -> str:
        """The job's identity: what it writes (not its name, which two studies in one folder may share)."""
        what = json.dumps([self.path, *self.more, self.marker])
        return hashlib.sha256(what.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """The runs of one study. `study` is the module that trains them (`execute`, `summarize`)."""

    study: str
    out: str  # the study folder: `launch/` (plans, job records, logs) lives here
    config: dict[str, Any]
    jobs: tuple[Job, ...]
    summary: dict[str, Any] = field(default_factory=dict)  # the study's arguments to summarize
    command: str = ""  # the command line that launched it, recorded in every run's manifest

    def job(self, name: str) -> Job:
        for j in self.jobs:
            if j.name == name:
                return j
        raise UserError(f"the plan {self.study} at {self.out} has no job {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        jobs = tuple(Job(**{**j, "after": tuple(j.get("after", ())), "more": tuple(j.get("more", ())),
                            "expect": tuple(tuple(e) for e in j.get("expect", ()))}) for j in d["jobs"])
        return cls(d["study"], d["out"], d["config"], jobs, d.get("summary", {}), d.get("command", ""))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def folder(self) -> Path:
        return Path(self.out) / "launch"

    def save(self) -> Path:
        """The plan as JSON in the study folder (what every job reads); also `launch/study.json`,
        the latest plan of this folder, which `rewind runs show` reads."""
        from rewind.launch import files

        return files.write_plan(self)


def read_plan(path: str | Path) -> Plan:
    from rewind.launch import files

    return files.read_plan(path)


def latest_plan(out: str | Path) -> Plan | None:
    """The plan last launched into the study folder `out`, if any."""
    from rewind.launch import files

    return files.latest_plan(out)


def study(plan: Plan):
    """The module that trains `plan`'s jobs (a study module: `execute`, `summarize`)."""
    return importlib.import_module(plan.study)


def done(job: Job) -> bool:
    """Whether the archive holds `job` complete (an IMP branch: with all its levels); UserError where a
    run it reopens holds another config, as the run itself would refuse (so a plan never calls such a
    run complete)."""
    for path, kind, identity in job.expect:
        if (Path(path) / runs.MANIFEST).exists():
            runs.check_identity(Path(path), runs.read(path).manifest.data, kind, identity)
    if job.marker:
        return Path(job.marker).exists()
    return all(_complete(Path(p), job.levels) for p in (job.path, *job.more))


def _complete(path: Path, levels: int) -> bool:
    if not (path / runs.MANIFEST).exists():
        return False
    data = runs.read(path).manifest.data
    return data.get("status") == "complete" and (not levels or data.get("levels_done", 0) >= levels)


def progress(job: Job) -> int:
    """How much of `job` the archive holds, as a count of its checkpoint files: a job that adds none in
    a whole time slot makes no progress."""
    return sum(1 for p in (job.path, *job.more) for _ in Path(p).rglob("*.safetensors"))


def pending(plan: Plan) -> list[Job]:
    """The jobs the archive does not hold complete, in plan order (dependencies first)."""
    return [j for j in plan.jobs if not done(j)]


def describe(plan: Plan) -> str:
    """The plan as `--dry-run` prints it: every run, what it trains, and whether the archive holds it."""
    lines = [f"plan: {len(plan.jobs)} runs in {plan.out}"]
    for j in plan.jobs:
        path = Path(j.path)
        started = (path / runs.MANIFEST).exists() and not j.marker
        state = "complete" if done(j) else "partial, resumes" if started else "to run"
        after = f"; after {', '.join(j.after)}" if j.after else ""
        folders = "".join(f"\n      {p}" for p in (j.path, *j.more))
        lines.append(f"  {j.name}: {j.describe} [{state}{after}]{folders}")
    return "\n".join(lines)


def execute_inline(plan: Plan) -> None:
    """Every pending job in this process, then the summary (what a job array does, one after another)."""
    module = study(plan)
    for job in pending(plan):
        module.execute(plan, job)
    module.summarize(plan)

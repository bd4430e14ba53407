"""A study's runs as plain data: a `Plan` of `Job`s, written as JSON into the study folder
(`launch/plan-<key>.json`, read back by `rewind.launch.files.read_plan`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewind.archive.atomic import write_text
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
    holds: tuple[int, ...] = ()  # a trunk: complete once it also holds these checkpoints (a new one asked is added)
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
        d = dataclasses.asdict(self)
        for job in d["jobs"]:  # written only where a job has them: plans made before keep their key
            if not job["holds"]:
                del job["holds"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        jobs = tuple(Job(**{**j, "after": tuple(j.get("after", ())), "more": tuple(j.get("more", ())),
                            "expect": tuple(tuple(e) for e in j.get("expect", ())),
                            "holds": tuple(j.get("holds", ()))}) for j in d["jobs"])
        return cls(d["study"], d["out"], d["config"], jobs, d.get("summary", {}), d.get("command", ""))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def folder(self) -> Path:
        return Path(self.out) / "launch"

    def save(self) -> Path:
        """The plan as JSON in the study folder (what every job reads, `launch/plan-<key>.json`); also
        `launch/study.json`, the latest plan of this folder, which `rewind runs show` reads."""
        path = self.folder() / f"plan-{self.key()}.json"
        write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True))
        write_text(self.folder() / "study.json", json.dumps({"plan": path.name}))
        return path

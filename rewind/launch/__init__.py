"""Executors: a study's runs trained in this process, as processes on this machine, or as Slurm jobs.

A study describes the runs it needs as a `Plan` of `Job`s, plain data: each job is one run the
archive already knows how to resume (a trunk, an IMP branch with its levels, a continuation, a
child pair, an arm, a sweep), the jobs it waits for, and the study's own arguments to train it.
The layer above (`rewind.studies.common`) gives the executors a `worker.Task`: how to train one
job (`execute(plan, job)`) and write the study's tables from the archive (`summarize(plan)`);
launch never imports a study. `local` and `slurm` send each job that is not complete (and not
already queued or running) to submitit, in waves (`local`) or as job arrays chained with `afterok`
(`slurm`), and the job that finishes last writes the summary. The archive is the only state: a
job that dies is resubmitted by running the same command again and resumes from its last checkpoint.

Nothing a job needs is pickled beyond its `Task` (references to the study layer's two functions)
and the path of its plan file and its name: the plan is JSON (`launch/plan-<hash>.json` in the
study folder), read back with `read_plan`; `files` has every file of the launch folder and its
validating reader. Importing this package loads no torch: the CLI reads `settings` from it.
"""

from __future__ import annotations

from pathlib import Path

from rewind.launch.plan import Job, Plan


def read_plan(path: str | Path) -> Plan:
    from rewind.launch import files

    return files.read_plan(path)


def latest_plan(out: str | Path) -> Plan | None:
    """The plan last launched into the study folder `out`, if any."""
    from rewind.launch import files

    return files.latest_plan(out)


def done(job: Job) -> bool:
    """Whether the archive holds `job` complete (an IMP branch: with all its levels); UserError where a
    run it reopens holds another config, as the run itself would refuse (so a plan never calls such a
    run complete)."""
    from rewind.archive import run as runs  # here: the CLI reads this package's settings without torch

    for path, kind, identity in job.expect:
        if (Path(path) / runs.MANIFEST).exists():
            runs.check_identity(Path(path), runs.read(path).manifest.data, kind, identity)
    if job.marker:
        return Path(job.marker).exists()
    if job.holds and _complete(Path(job.path), 0):
        held = runs.read(job.path).stage("trunk")
        if not all(held.has(k) for k in job.holds):
            return False
    return all(_complete(Path(p), job.levels) for p in (job.path, *job.more))


def _complete(path: Path, levels: int) -> bool:
    from rewind.archive import run as runs

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
    from rewind.archive.run import MANIFEST

    lines = [f"plan: {len(plan.jobs)} runs in {plan.out}"]
    for j in plan.jobs:
        path = Path(j.path)
        started = (path / MANIFEST).exists() and not j.marker
        state = "complete" if done(j) else "partial, resumes" if started else "to run"
        after = f"; after {', '.join(j.after)}" if j.after else ""
        folders = "".join(f"\n      {p}" for p in (j.path, *j.more))
        lines.append(f"  {j.name}: {j.describe} [{state}{after}]{folders}")
    return "\n".join(lines)

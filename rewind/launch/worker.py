"""What runs inside a job: read the plan, train the one run named, and write the study's summary
if it was the last. Submitit pickles only a `Task` (the study layer's `execute` and `summarize`, by
reference) and two strings (the plan file and the name)."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import submitit

from rewind.archive.lock import FolderLock
from rewind.errors import UserError
from rewind.launch import Job, Plan, done, files, pending, progress, read_plan, records, slurm
from rewind.launch.settings import LaunchConfig


Execute = Callable[[Plan, Job], None]
Summarize = Callable[[Plan], Any]


def run_job(plan_file: str, name: str, execute: Execute, summarize: Summarize) -> str:
    """Train job `name` of the plan in `plan_file` (`execute`), recording its state; the last job to
    finish writes the study's summary (`summarize`)."""
    plan = read_plan(plan_file)
    job = plan.job(name)
    # Every run it makes records the study's command and this job (not the worker's own argv).
    marks = {"REWIND_COMMAND": plan.command, "REWIND_JOB": f"{Path(plan_file).resolve()}#{name}"}
    before = {k: os.environ.get(k) for k in marks}
    os.environ.update({k: v for k, v in marks.items() if v})
    try:
        _run(plan, job, execute, summarize)
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return job.path


def _run(plan: Plan, job: Job, execute: Execute, summarize: Summarize) -> None:
    records.mark(plan, job, "running", started=time.time(), progress=progress(job))
    try:
        if not done(job):
            execute(plan, job)
    except Exception as e:  # a preemption's SystemExit is no failure: the job is requeued
        line = str(e) if isinstance(e, UserError) else (traceback.format_exception_only(e)[-1].strip() or repr(e))
        records.mark(plan, job, "failed", line)
        raise
    records.mark(plan, job, "finished")
    summarize_if_last(plan, summarize)


def summarize_if_last(plan: Plan, summarize: Summarize) -> bool:
    """Write the study's tables and plots once every job is complete (whichever job gets here last)."""
    if pending(plan):
        return False
    with FolderLock(plan.folder() / "summary", wait=True):  # one writer; a second one rewrites the same
        for folder in (Path(p) for j in plan.jobs for p in (j.path, *j.more)):
            if folder.is_dir():  # a job that has just completed its run may still hold its folder's lock
                FolderLock(folder, wait=True).acquire().release()
        summarize(plan)
    return True


class Task(submitit.helpers.Checkpointable):
    """A job as submitit runs it: `execute` and `summarize` come from the study layer (importable
    functions, pickled by reference). A job that Slurm preempts, or whose time slot ends, is requeued
    with the same arguments and resumes from the archive's last checkpoint, as often as it needs while
    each time slot saves one."""

    def __init__(self, execute: Execute, summarize: Summarize):
        self.execute, self.summarize = execute, summarize

    def __call__(self, plan_file: str, name: str) -> str:
        return run_job(plan_file, name, self.execute, self.summarize)

    def checkpoint(self, plan_file: str, name: str) -> submitit.helpers.DelayedSubmission | None:
        """Called on Slurm's signal: requeue the job, unless a whole time slot saved no checkpoint
        (the job would never finish): then it fails, saying so."""
        plan = read_plan(plan_file)
        job = plan.job(name)
        own = files.read_state(plan.out, job.key)
        limit = LaunchConfig(**plan.config.get("launch", {})).time_limit
        ran = time.time() - own.get("started", time.time())
        slot_ended = ran >= limit * 60 - slurm.SIGNAL_LEAD_S - slurm.SIGNAL_EARLY_S
        if slot_ended and progress(job) <= own.get("progress", 0):
            records.mark(plan, job, "failed", f"no checkpoint was saved in a whole time slot of --time-limit {limit} "
                                              "min: give a longer --time-limit (or a smaller --save-every)")
            return None
        return super().checkpoint(plan_file, name)

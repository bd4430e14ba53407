"""The background process of `--executor local --detach`: runs a plan's pending jobs, then exits. Its
stdin holds the `worker.Task` that runs each job, pickled by the process that started it."""

from __future__ import annotations

import functools
import os
import pickle
import sys

from rewind.launch import read_plan, records
from rewind.launch.settings import LaunchConfig
from rewind.launch.submit import run_local, to_submit


def main(plan_file: str) -> None:
    task = pickle.load(sys.stdin.buffer)
    plan = read_plan(plan_file)
    launch = LaunchConfig(**plan.config.get("launch", {}))
    jobs = [j for j in plan.jobs if j in to_submit(plan) or _mine(plan, j)]
    say = functools.partial(print, flush=True)
    failed = run_local(plan, plan.folder() / os.path.basename(plan_file), jobs, launch, task, say,
                       driver_pid=os.getpid())
    say(f"done: {len(jobs) - len(failed)} of {len(jobs)} runs complete")


def _mine(plan, job) -> bool:
    """Recorded as queued by this process before it started (the launcher wrote its pid)."""
    return records.submitted(plan).get(job.key, {}).get("driver_pid") == os.getpid()


if __name__ == "__main__":
    main(sys.argv[1])

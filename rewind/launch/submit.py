"""Sending a plan's pending jobs out: as processes on this machine, or as Slurm job arrays.

`local` runs the jobs in waves (a run waits for those it depends on), up to `local_jobs` at once,
one GPU each where there are several (`CUDA_VISIBLE_DEVICES`), through submitit's local executor;
with `detach` a background process does that and the command returns. `slurm` submits every wave
at once as one job array per wave, each array `afterok` on the jobs of the earlier waves it needs
(a dependency already complete is dropped, one already queued or running is waited for).
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, Callable

from rewind import config as cfg
from rewind.errors import UserError
from rewind.launch import Job, Plan, records

RESUBMIT = ("never submitted", "failed")


def to_submit(plan: Plan) -> list[Job]:
    """The jobs neither complete nor already queued or running."""
    table = records.submitted(plan)
    return [j for j in plan.jobs if records.state(plan, j, table)[0] in RESUBMIT]


def waves(plan: Plan, jobs: list[Job]) -> list[list[Job]]:
    """`jobs` grouped so that every job comes after the jobs of this submission it waits for."""
    names = {j.name for j in jobs}
    depth: dict[str, int] = {}
    for j in plan.jobs:  # plan order lists dependencies first
        depth[j.name] = max((depth[a] + 1 for a in j.after if a in names and a in depth), default=0)
    out: dict[int, list[Job]] = {}
    for j in jobs:
        out.setdefault(depth[j.name], []).append(j)
    return [out[d] for d in sorted(out)]


def submit(plan: Plan, launch: cfg.LaunchConfig, say: Callable[[str], None] = print) -> None:
    """Send out what `plan` still needs, saying what happens; UserError if a local run failed."""
    if launch.executor == "slurm":  # before anything is written
        check_slurm()
        check_visible(plan.out)
    jobs = to_submit(plan)
    if not jobs:
        waiting = [j.name for j in plan.jobs if records.state(plan, j)[0] != "complete"]
        if waiting:
            say(f"nothing to submit: {len(waiting)} runs are queued or running; `rewind runs show {plan.out}`")
        else:
            say(f"every run of {plan.out} is complete; its tables: `rewind runs summarize {plan.out}`")
        return
    from rewind.archive.manifest import command_line

    plan = dataclasses.replace(plan, command=plan.command or command_line())
    plan_file = plan.save()
    if launch.executor == "slurm":
        submit_slurm(plan, plan_file, jobs, launch, say)
    elif launch.detach:
        detach(plan, plan_file, jobs, say)
    elif failed := run_local(plan, plan_file, jobs, launch, say):
        raise UserError(f"{len(failed)} of {len(jobs)} runs did not complete ({', '.join(sorted(failed)[:4])}); "
                        f"`rewind runs show {plan.out}` has the last line of each log; run the command again to "
                        "resume them")


def _gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count()))


def run_local(plan: Plan, plan_file: Path, jobs: list[Job], launch: cfg.LaunchConfig,
              say: Callable[[str], None] = print, driver_pid: int | None = None) -> set[str]:
    """Run `jobs` wave by wave as local processes; returns the names of those that did not complete."""
    import submitit

    from rewind.launch.worker import Task

    gpus = _gpus()
    slots: list[int | None] = (gpus if gpus else [None]) if not launch.local_jobs else \
        [gpus[i % len(gpus)] if gpus else None for i in range(launch.local_jobs)]
    records.record(plan, {j.name: {"executor": "local", "job_id": "", "driver_pid": driver_pid or os.getpid(),
                                   "host": os.uname().nodename} for j in jobs})
    executor = submitit.LocalExecutor(folder=plan.folder() / "logs" / "%j")
    failed: set[str] = set()
    for wave in waves(plan, jobs):
        queue = [j for j in wave if not failed.intersection(j.after)]
        for j in wave:
            if j not in queue:
                say(f"{j.name}: not run, it waits for a run that failed ({', '.join(failed.intersection(j.after))})")
        failed |= {j.name for j in wave if j not in queue}
        running: dict[int, tuple[Job, Any]] = {}
        while queue or running:
            for slot in [s for s in range(len(slots)) if s not in running][:len(queue)]:
                job = queue.pop(0)
                gpu = slots[slot]
                executor.update_parameters(timeout_min=60 * 24 * 365, gpus_per_node=0 if gpu is None else 1,
                                           visible_gpus=() if gpu is None else (gpu,))
                sub = executor.submit(Task(), str(plan_file), job.name)
                records.record(plan, {job.name: {"executor": "local", "job_id": sub.job_id, "host": os.uname().nodename,
                                                 "driver_pid": driver_pid or os.getpid(),
                                                 "stderr": str(sub.paths.stderr), "folder": str(sub.paths.folder)}})
                running[slot] = (job, sub)
                say(f"{job.name}: started (pid {sub.job_id}{'' if gpu is None else f', GPU {gpu}'}; "
                    f"log {sub.paths.stderr})")
            time.sleep(0.5)
            for slot, (job, sub) in list(running.items()):
                if sub.done():
                    del running[slot]
                    state, detail = records.state(plan, job)
                    if state != "complete":
                        failed.add(job.name)
                    say(f"{job.name}: {state}{': ' + detail if state == 'failed' else ''}")
    return failed


def detach(plan: Plan, plan_file: Path, jobs: list[Job], say: Callable[[str], None]) -> None:
    """Start a background process that runs the jobs locally, and return."""
    log = plan.folder() / "driver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rewind.launch.local", str(plan_file)], stdout=f, stderr=f,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    records.record(plan, {j.name: {"executor": "local", "job_id": "", "driver_pid": proc.pid,
                                   "host": os.uname().nodename} for j in jobs})
    say(f"started {len(jobs)} runs in the background (pid {proc.pid}, log {log})")
    say(f"archive: {plan.out}; follow it with `rewind runs show {plan.out}`")


NODE_LOCAL = ("tmpfs", "ramfs")


def _filesystem(path: Path) -> str:
    """The type of the filesystem `path` is on (its longest mount point in /proc/mounts), or ''."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    best = max((m for m in mounts if path == Path(m[0]) or Path(m[0]) in path.parents), key=lambda m: len(m[0]),
               default=None)
    return best[1] if best else ""


def check_visible(out: str) -> None:
    """The study folder must be one the cluster's nodes see: not memory-backed, not /tmp of this node."""
    path = Path(out).expanduser().resolve()
    fs = _filesystem(path)
    if fs in NODE_LOCAL or path == Path("/tmp") or (Path("/tmp") in path.parents and os.environ.get(
            "REWIND_TMP_IS_SHARED") != "1"):
        raise UserError(f"{out} is on this machine's own {'memory (' + fs + ')' if fs in NODE_LOCAL else '/tmp'}, "
                        "which the cluster's nodes cannot see: put --out on the shared filesystem (e.g. under "
                        "your home or project folder)")


def check_slurm() -> None:
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"--executor slurm needs Slurm, and {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH here: run the command on the cluster's "
                        "login node, or use --executor local")


def submit_slurm(plan: Plan, plan_file: Path, jobs: list[Job], launch: cfg.LaunchConfig,
                 say: Callable[[str], None]) -> None:
    import submitit

    from rewind.launch.worker import Task

    table = records.submitted(plan)
    ids = {name: e["job_id"] for name, e in table.items() if e.get("executor") == "slurm"}
    executor = submitit.AutoExecutor(folder=plan.folder() / "logs" / "%j", cluster="slurm")
    params: dict[str, Any] = {"timeout_min": launch.time_limit, "gpus_per_node": launch.gpus_per_job,
                              "cpus_per_task": launch.cpus_per_job, "mem_gb": launch.mem_gb,
                              "slurm_array_parallelism": launch.array_parallelism, "name": "rewind"}
    if launch.partition:
        params["slurm_partition"] = launch.partition
    extra = cfg.sbatch_options(launch.sbatch)
    for wave in waves(plan, jobs):
        needs = sorted({ids[a] for j in wave for a in j.after
                        if a in ids and records.state(plan, plan.job(a), records.submitted(plan))[0] != "complete"})
        dependency = {"dependency": "afterok:" + ":".join(needs)} if needs else {}
        executor.update_parameters(**params, slurm_additional_parameters={**extra, **dependency})
        said = io.StringIO()  # submitit prints what sbatch said on a failure: it goes into the one line
        try:
            with redirect_stderr(said), executor.batch():
                subs = [executor.submit(Task(), str(plan_file), j.name) for j in wave]
        except Exception as e:  # noqa: BLE001  sbatch refused: say what it said, in one line
            message = [line for line in (str(e) + "\n" + said.getvalue()).splitlines() if "error" in line.lower()]
            raise UserError(f"sbatch refused the jobs: {message[0].strip() if message else e}; check --partition, "
                            "--sbatch and the cluster's limits") from None
        entries = {j.name: {"executor": "slurm", "job_id": s.job_id, "stderr": str(s.paths.stderr),
                            "folder": str(s.paths.folder)} for j, s in zip(wave, subs)}
        records.record(plan, entries)
        ids.update({n: e["job_id"] for n, e in entries.items()})
        after = f" after {dependency['dependency']}" if dependency else ""
        say(f"submitted {len(wave)} jobs ({', '.join(sorted({s.job_id.split('_')[0] for s in subs}))})"
                     f"{after}: {', '.join(j.name for j in wave)}")
    say(f"archive: {plan.out}; logs: {plan.folder() / 'logs'}; follow it with `rewind runs show {plan.out}`")

"""Sending a plan's jobs out: as processes on this machine, or as Slurm job arrays.

What is sent: every job that is never submitted, failed or stuck (pending for a reason Slurm never
clears), and every job not complete that waits for one of those (a queued one is cancelled first), so
that one run of the study's command brings any study back to a state that completes.

`local` runs the jobs in waves (a run waits for those it depends on), up to `local_jobs` at once,
one GPU each where there are several (`CUDA_VISIBLE_DEVICES`), through submitit's local executor;
with `detach` a background process does that and the command returns. `slurm` submits every wave
at once, as one job array per wave and set of dependencies: a job waits (`afterok`) only for the runs
it needs that are not complete, as sent now or earlier (`dependencies`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rewind.errors import UserError
from rewind.launch import Job, Plan, files, records, slurm
from rewind.launch.settings import LaunchConfig, sbatch_options

if TYPE_CHECKING:
    from rewind.launch.worker import Task


def sends(plan: Plan, table: records.Table) -> tuple[list[Job], list[str]]:
    """(the jobs to send, the Slurm job ids to cancel first): what is never submitted, failed or stuck,
    and every job not complete that waits for one of those."""
    out: list[Job] = []
    for job in plan.jobs:  # plan order lists dependencies first
        state = table.state(job).state
        if state in records.RESEND or (state in ("queued", "unknown") and {j.name for j in out} & set(job.after)):
            out.append(job)
    live = slurm.RUNNING + slurm.WAITING
    cancel = [e["job_id"] for j in out if (e := table.entry(j)) and e["executor"] == "slurm"
              and (i := table.slurm.get(e["job_id"])) and i.state in live]
    return out, cancel


def to_submit(plan: Plan) -> list[Job]:
    """The jobs to send (see `sends`)."""
    return sends(plan, records.Table(plan, strict=True))[0]


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


def dependencies(job: Job, ids: dict[str, str]) -> tuple[str, ...]:
    """The Slurm job ids `job` waits for: those of the runs it needs that are not complete (`ids`: job
    name -> id, of the jobs queued or running and of those sent now)."""
    return tuple(sorted({ids[a] for a in job.after if a in ids}))


def arrays(wave: list[Job], ids: dict[str, str]) -> list[tuple[tuple[str, ...], list[Job]]]:
    """A wave as job arrays: one per set of dependencies (a replicate's branches wait for its own trunk)."""
    out: dict[tuple[str, ...], list[Job]] = {}
    for job in wave:
        out.setdefault(dependencies(job, ids), []).append(job)
    return list(out.items())


def submit(plan: Plan, launch: LaunchConfig, task: Task, say: Callable[[str], None] = print) -> None:
    """Send out what `plan` still needs, each job run by `task`, saying what happens; UserError if a
    local run failed."""
    if launch.executor == "slurm":  # before anything is written
        check_slurm()
        check_visible(plan.out)
        check_time_limit(launch.time_limit)
        extra = check_sbatch(launch.sbatch)
        nodes = check_partition(launch.partition)
        resources(plan, launch, nodes)  # a --device cuda without GPUs is refused here
    files.repair(plan.out, say)
    table = records.Table(plan, strict=True)
    jobs, cancel = sends(plan, table)
    from rewind.archive.manifest import command_line

    plan = dataclasses.replace(plan, command=plan.command or command_line())
    if not jobs:
        if Path(plan.out, "launch").is_dir():  # a plan (or its pointer) set aside as damaged is written anew
            plan.save()
        waiting = [j.name for j in plan.jobs if table.state(j).state != "complete"]
        if waiting:
            say(f"nothing to submit: {len(waiting)} runs are queued or running; `rewind runs show {plan.out}`")
        else:
            say(f"every run of {plan.out} is complete; its tables: `rewind runs summarize {plan.out}`")
        return
    if launch.executor == "slurm":
        submit_slurm(plan, table, jobs, cancel, launch, extra, nodes, task, say)
        return
    plan_file = plan.save()
    if launch.detach:
        detach(plan, plan_file, jobs, task, say)
    elif failed := run_local(plan, plan_file, jobs, launch, task, say):
        raise UserError(f"{len(failed)} of {len(jobs)} runs did not complete ({', '.join(sorted(failed)[:4])}); "
                        f"`rewind runs show {plan.out}` has the last line of each log; run the command again to "
                        "resume them")


def _gpus() -> list[int]:
    import torch

    return list(range(torch.cuda.device_count()))


def run_local(plan: Plan, plan_file: Path, jobs: list[Job], launch: LaunchConfig, task: Task,
              say: Callable[[str], None] = print, driver_pid: int | None = None) -> set[str]:
    """Run `jobs` wave by wave as local processes (each `task`); returns the names of those that did not
    complete."""
    import submitit

    gpus = _gpus()
    slots: list[int | None] = (gpus if gpus else [None]) if not launch.local_jobs else \
        [gpus[i % len(gpus)] if gpus else None for i in range(launch.local_jobs)]
    records.record(plan, [(j, {"executor": "local", "job_id": "", "driver_pid": driver_pid or os.getpid(),
                               "host": os.uname().nodename}) for j in jobs])
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
                sub = executor.submit(task, str(plan_file), job.name)
                records.record(plan, [(job, {"executor": "local", "job_id": sub.job_id, "host": os.uname().nodename,
                                             "driver_pid": driver_pid or os.getpid(),
                                             "stderr": str(sub.paths.stderr), "folder": str(sub.paths.folder)})])
                running[slot] = (job, sub)
                say(f"{job.name}: started (pid {sub.job_id}{'' if gpu is None else f', GPU {gpu}'}; "
                    f"log {sub.paths.stderr})")
            time.sleep(0.5)
            for slot, (job, sub) in list(running.items()):
                if sub.done():
                    del running[slot]
                    state = records.state(plan, job)
                    if state.state != "complete":
                        failed.add(job.name)
                    say(f"{job.name}: {state.state}{': ' + state.detail if state.state == 'failed' else ''}")
    return failed


def detach(plan: Plan, plan_file: Path, jobs: list[Job], task: Task, say: Callable[[str], None]) -> None:
    """Start a background process that runs the jobs locally, and return. It reads `task` from its
    stdin, pickled as submitit sends a job its task (references to the study layer's functions)."""
    log = plan.folder() / "driver.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rewind.launch.local", str(plan_file)], stdout=f, stderr=f,
                                stdin=subprocess.PIPE, start_new_session=True)
        proc.stdin.write(pickle.dumps(task))
        proc.stdin.close()
    records.record(plan, [(j, {"executor": "local", "job_id": "", "driver_pid": proc.pid,
                               "host": os.uname().nodename}) for j in jobs])
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


def check_time_limit(minutes: int) -> None:
    if minutes < slurm.MIN_TIME_LIMIT:
        raise UserError(f"--time-limit {minutes} is too short: Slurm signals a job {slurm.SIGNAL_LEAD_S} to "
                        f"{slurm.SIGNAL_LEAD_S + slurm.SIGNAL_EARLY_S} s before its time limit so that it requeues "
                        "itself, which would leave it no time to reach a checkpoint; give at least "
                        f"{slurm.MIN_TIME_LIMIT} (minutes)")


def check_sbatch(text: str) -> dict[str, str]:
    """The --sbatch options, each one this cluster's sbatch knows."""
    extra = sbatch_options(text)
    known = slurm.sbatch_options()
    for key, value in extra.items():
        if known and key not in known:
            raise UserError(f"--sbatch {key}={value}: sbatch here has no option --{key} (`sbatch --help` lists them)")
    return extra


def check_partition(partition: str) -> slurm.Nodes | None:
    """The largest node of `partition` (or of the default one), which must exist; None where sinfo cannot tell."""
    found = slurm.partitions()
    if found is None:
        return None
    if partition and partition not in found:
        raise UserError(f"--partition {partition}: this cluster has no such partition (it has "
                        f"{', '.join(sorted(p for p in found if p))}; `sinfo` lists them)")
    return found.get(partition)


def _device(plan: Plan) -> str:
    return plan.config.get("runtime", {}).get("device") or plan.summary.get("overrides", {}).get("device") or "auto"


def resources(plan: Plan, launch: LaunchConfig, nodes: slurm.Nodes | None) -> dict[str, Any]:
    """GPUs, CPUs and memory per job: those given, else what the run needs within the partition's
    largest node (`nodes`; None where sinfo cannot tell): no GPU for --device cpu or where the nodes
    have none (--device auto), at most 8 CPUs and 32 GB."""
    device = _device(plan)
    gpus = launch.gpus_per_job
    if gpus is None:
        gpus = 0 if device == "cpu" or (device == "auto" and nodes is not None and nodes.gpus == 0) else 1
    if device == "cuda" and gpus == 0:
        raise UserError("--device cuda needs a GPU per job: give --gpus-per-job 1 (or --device cpu)")
    cpus = launch.cpus_per_job or min(8, nodes.cpus if nodes else 8)
    mem_mb = launch.mem_gb * 1024 if launch.mem_gb else min(32 * 1024, nodes.mem_mb if nodes else 32 * 1024)
    return {"gpus_per_node": gpus, "cpus_per_task": cpus, "mem_gb": mem_mb / 1024}


class _Written:
    """What a submission writes into the launch folder, to take back if sbatch refuses it."""

    def __init__(self, plan: Plan):
        self.out, self.launch = Path(plan.out), plan.folder()
        self.existed = [p for p in (self.out, self.launch, self.launch / "logs") if p.exists()]
        self.pointer = (self.launch / "study.json").read_bytes() if (self.launch / "study.json").exists() else None
        self.plans = set(self.launch.glob("plan-*.json"))
        self.logs = self.files()

    def files(self) -> set[Path]:
        logs = self.launch / "logs"
        return {p for p in logs.rglob("*") if not p.is_dir()} if logs.exists() else set()

    def undo(self, logs_since: set[Path], everything: bool) -> None:
        """Remove the submitted files (pickles, scripts) written since `logs_since`; with `everything`,
        also the plan and its pointer written by this submission, and the folders it made."""
        for p in self.files() - logs_since:
            p.unlink(missing_ok=True)
        if not everything:
            return
        for p in set(self.launch.glob("plan-*.json")) - self.plans:
            p.unlink(missing_ok=True)
        if self.pointer is None:
            (self.launch / "study.json").unlink(missing_ok=True)
        else:
            (self.launch / "study.json").write_bytes(self.pointer)
        for folder in (self.launch / "logs", self.launch, self.out):
            if folder not in self.existed and folder.is_dir():
                for d in sorted((d for d in folder.rglob("*") if d.is_dir()), reverse=True):
                    if not any(d.iterdir()):
                        d.rmdir()
                if not any(p.name != ".lock" for p in folder.iterdir()):
                    shutil.rmtree(folder)


def _sbatch(executor, plan_file: Path, jobs: list[Job], task: Task) -> list[Any]:
    """Submit `jobs` as one array (each `task`); UserError with sbatch's own words in one line if it refuses."""
    said = io.StringIO()  # submitit prints what sbatch said on a failure: it goes into the one line
    try:
        with redirect_stderr(said), executor.batch():
            return [executor.submit(task, str(plan_file), j.name) for j in jobs]
    except Exception as e:  # noqa: BLE001  sbatch refused: say what it said, in one line
        text = f"{e}\n{said.getvalue()}"
        line = slurm.refusal(text)
        if slurm.unreachable(text):
            raise slurm.Unreachable(f"Slurm's controller does not answer (sbatch: {line}); nothing was submitted: "
                                    "run the command again once `scontrol ping` says it is UP") from None
        raise UserError(f"sbatch refused the jobs: {line}; {slurm.hint(line)}") from None


def submit_slurm(plan: Plan, table: records.Table, jobs: list[Job], cancel: list[str], launch: LaunchConfig,
                 extra: dict[str, str], nodes: slurm.Nodes | None, task: Task, say: Callable[[str], None]) -> None:
    import submitit

    names = {j.name for j in jobs}
    ids = {j.name: e["job_id"] for j in plan.jobs if j.name not in names and (e := table.entry(j))
           and e["executor"] == "slurm" and table.state(j).state != "complete"}
    params: dict[str, Any] = {**resources(plan, launch, nodes),
                              "timeout_min": launch.time_limit, "slurm_signal_delay_s": slurm.SIGNAL_LEAD_S,
                              "slurm_array_parallelism": launch.array_parallelism, "name": "rewind"}
    if launch.partition:
        params["slurm_partition"] = launch.partition
    # Dependents of a job that fails are cancelled (and sent again by the next run of the command), and
    # a job may be requeued (preemption, the end of a time slot) however the cluster is set up.
    fixed: dict[str, Any] = {"kill-on-invalid-dep": "yes", "requeue": True}
    written = _Written(plan)
    plan_file = plan.save()
    executor = submitit.AutoExecutor(folder=plan.folder() / "logs" / "%j", cluster="slurm",
                                     slurm_max_num_timeout=10 ** 6)  # requeued as often as a run needs
    slurm.cancel(cancel)
    sent = 0
    for wave in waves(plan, jobs):
        for deps, group in arrays(wave, ids):
            dependency = {"dependency": "afterok:" + ":".join(deps)} if deps else {}
            executor.update_parameters(**params, slurm_additional_parameters={**fixed, **extra, **dependency})
            before = written.files()
            try:
                subs = _sbatch(executor, plan_file, group, task)
            except UserError as e:
                written.undo(before, everything=not sent)
                if sent:
                    raise UserError(f"{e}; {sent} jobs were submitted before it: run the command again to send the "
                                    "rest") from None
                raise
            records.record(plan, [(j, {"executor": "slurm", "job_id": s.job_id, "stderr": str(s.paths.stderr),
                                       "folder": str(s.paths.folder)}) for j, s in zip(group, subs)])
            ids.update({j.name: s.job_id for j, s in zip(group, subs)})
            sent += len(group)
            after = f" after {dependency['dependency']}" if dependency else ""
            say(f"submitted {len(group)} jobs ({', '.join(sorted({s.job_id.split('_')[0] for s in subs}))})"
                f"{after}: {', '.join(j.name for j in group)}")
    say(f"archive: {plan.out}; logs: {plan.folder() / 'logs'}; follow it with `rewind runs show {plan.out}`")

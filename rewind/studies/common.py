"""What the studies share: a trunk as a plan lists it, runs grouped into the jobs of `--parallel`,
the marker that a job writing no run folder is complete, and running a plan (`run`: every pending
job here, then the summary; `submit`: through an executor).

A study module has `plan(...)` (its runs as a `rewind.launch.Plan` of plain jobs), `execute(plan,
job)` (train one job in this process) and `summarize(plan)` (its tables and figures from the
archive, returned). `rewind.launch` runs jobs through the two functions here, `execute` and
`summarize`, which find the study module a plan names: launch never imports a study.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from rewind import config as cfg
from rewind import launch, steps
from rewind.archive.atomic import write_text
from rewind.archive.run import identity_hash
from rewind.launch.settings import LaunchConfig

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """`items` in order, `size` to a chunk (the last may be shorter): the jobs of `--parallel size`."""
    size = max(1, size)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def trunk_description(config: cfg.Config, size: int, extra: Sequence[int] = ()) -> str:
    """A trunk as a plan lists it: model, length, the pre-training before it, extra checkpoints
    (`size`: its training examples)."""
    from rewind.train.pretrain import pretrain_plan, schedule_offset
    from rewind.train.schedule import Plan

    offset = schedule_offset(config, size)
    tplan = Plan.from_config(config.train, size, offset=offset)
    ipe = tplan.iterations_per_epoch
    text = (f"trunk, {config.model.model} on {config.data.source}, {tplan.total} it "
            f"({steps.format(tplan.total, ipe)}, {ipe} it/epoch)")
    if config.train.deficit.strip():
        text += f", deficit {config.train.deficit}"
    if config.pretrain.pretrain != "none":
        p = pretrain_plan(config, size)
        text += f", after {config.pretrain.pretrain} pre-training of {p.total} it ({config.pretrain.pretrain_steps})"
        text += f" that takes the schedule's first {offset} it" if offset else ""
    if extra:
        text += f"; checkpoints also at {', '.join(map(str, extra))}"
    return text


def expect_trunk(config: cfg.Config, root: str | Path) -> tuple:
    """What a plan's trunk job checks of the archive at `root`: the trunk `config` trains there (a plan
    refuses another config, as training it does)."""
    return ((str(root), "trunk", config.experiment_dict()),)


def marker(out: str | Path, kind: str, settings: dict[str, Any]) -> str:
    """The file that says a job writing no run folder of its own (an analysis, a whole sweep) is
    complete under these `settings`: written when the job ends (`execute`)."""
    return str(Path(out) / "launch" / f"done-{kind}-{identity_hash(settings)}.json")


def study(plan: launch.Plan):
    """The module that trains `plan`'s jobs: `rewind.studies.<name>`, or `rewind.reproduce.run` for a
    `rewind reproduce` plan (the one import by a run-time name, tests/test_layers.py; a plan file read
    back names one of `rewind.launch.files.PLAN_MODULES`, which `read_plan` checks)."""
    return importlib.import_module(plan.study)


def execute(plan: launch.Plan, job: launch.Job) -> None:
    """Train one job of `plan` in this process; a job that writes no run folder then writes its marker."""
    study(plan).execute(plan, job)
    if job.marker and not Path(job.marker).exists():
        write_text(Path(job.marker), json.dumps({"job": job.name, "plan": f"plan-{plan.key()}.json"}))


def summarize(plan: launch.Plan) -> Any:
    """The study's tables and figures from what its archive holds (every job complete)."""
    return study(plan).summarize(plan)


def run(plan: launch.Plan) -> Any:
    """The study inline: every job the archive does not hold complete, in plan order, then the summary
    (what the executors do, one job after another); returns what the summary returns."""
    for job in launch.pending(plan):
        execute(plan, job)
    return summarize(plan)


def task():
    """What an executor runs for a job: `execute` it, and `summarize` once it is the last."""
    from rewind.launch.worker import Task

    return Task(execute, summarize)


def submit(plan: launch.Plan, settings: LaunchConfig, say: Callable[[str], None] = print) -> None:
    """Send what `plan` still needs to the executor `settings` name (local processes, Slurm)."""
    from rewind.launch import submit as executors

    executors.submit(plan, settings, task(), say)


def summarize_if_last(plan: launch.Plan) -> bool:
    """Write the study's summary if every job is complete (`rewind runs summarize`)."""
    from rewind.launch.worker import summarize_if_last as if_last

    return if_last(plan, summarize)

"""A deep-linear sweep as a plan for the launcher: one job, the whole sweep (its networks are
small and train batched in one process), complete once it has finished under these settings.

`execute` trains the sweep's arms; `summarize` reads its tables from the archives and, unless the
plan says otherwise (`rewind reproduce` keeps several sweeps in one folder and draws its own
figures), writes them and the study's figures into the study folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewind import launch
from rewind.linear import config as linear_config
from rewind.studies import common

SWEEPS = {"pathways": linear_config.PathwaysStudy, "completion": linear_config.CompletionStudy}


def plan(kind: str, study, out: str | Path, write: bool = True) -> launch.Plan:
    """The sweep as one job; `write`: summarize writes the tables and figures into `out`."""
    if kind == "completion":
        study.completion.check_sweep()
    settings = study.to_dict()[kind]
    job = launch.Job("sweep", str(out), f"deep linear {kind} sweep: {_brief(settings)}",
                     {"kind": kind}, marker=common.marker(out, kind, settings),
                     expect=_trunks(kind, study, out))
    return launch.Plan("rewind.studies.linear", str(out), study.to_dict(), (job,), {"kind": kind, "write": write})


def _trunks(kind: str, study, out: str | Path) -> tuple:
    """(folder, kind, identity) of every trunk the sweep reopens: a plan refuses one of another config,
    as the sweep does."""
    from rewind.linear import completion, pathways
    from rewind.linear.config import counts
    from rewind.linear.sweep import archive_name

    c = getattr(study, kind)
    depths, seeds = counts(c.depth, "depth"), counts(c.seeds, "seeds")
    if kind == "pathways":
        return tuple((str(Path(out) / archive_name(d, s)), pathways.KIND, pathways.trunk_identity(c, d, s))
                     for d in depths for s in seeds)
    # completion: one trunk per swept variant too, each in its own archive (as the sweep names it)
    return tuple((str(completion.archive(Path(out), c, d, s, v)), completion.KIND, completion.trunk_identity(c, d, s, v))
                 for d in depths for v in completion.variants(c) for s in seeds)


def _brief(settings: dict) -> str:
    """The sweep's lists, and its settings that differ from the defaults."""
    always = ("depth", "seeds", "deficit_start", "pretrain_steps")
    defaults = dict(SWEEPS["pathways" if "deficit_start" in settings else "completion"]().to_dict())
    defaults = next(v for k, v in defaults.items() if k in ("pathways", "completion"))
    return ", ".join(f"{k} {v}" for k, v in settings.items()
                     if k in always or (k not in ("record_every", "save_every", "relative") and v != defaults.get(k)))


def _module(kind: str):
    from rewind.linear import completion, pathways

    return pathways if kind == "pathways" else completion


def _study_of(plan: launch.Plan):
    return SWEEPS[plan.summary.get("kind") or plan.jobs[0].args["kind"]].from_sections(plan.config)


def execute(plan: launch.Plan, job: launch.Job) -> None:
    """Train every arm of the sweep the archives do not hold complete."""
    _module(job.args["kind"]).train(_study_of(plan), plan.out)


def summarize(plan: launch.Plan) -> Any:
    """The sweep's tables, read from its archives (written with its figures unless the plan says not)."""
    from rewind.linear import sweep

    kind = plan.summary.get("kind") or plan.jobs[0].args["kind"]
    study, module = _study_of(plan), _module(kind)
    with sweep.threads(study.runtime.threads):
        tables = module.tables(study, plan.out)
    if plan.summary.get("write", True):
        module.write(tables, study, plan.out)
    return tables

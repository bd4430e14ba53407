"""A deep-linear sweep as a plan for the launcher: one job, the whole sweep (its networks are
small and train batched in one process), complete once it has finished under these settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rewind import launch
from rewind.linear import config as linear_config

SWEEPS = {"pathways": linear_config.PathwaysStudy, "completion": linear_config.CompletionStudy}


def plan(kind: str, study, out: str | Path) -> launch.Plan:
    if kind == "completion":
        study.completion.check_sweep()
    settings = study.to_dict()[kind]
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    job = launch.Job("sweep", str(out), f"deep linear {kind} sweep: {_brief(settings)}",
                     {"kind": kind}, marker=str(Path(out) / "launch" / f"done-{kind}-{key}.json"),
                     expect=_trunks(kind, study, out))
    return launch.Plan("rewind.studies.linear", str(out), study.to_dict(), (job,), {"kind": kind})


def _trunks(kind: str, study, out: str | Path) -> tuple:
    """(folder, kind, identity) of every trunk the sweep reopens: a plan refuses one of another config,
    as the sweep does."""
    from rewind.linear import completion, pathways
    from rewind.linear.config import counts
    from rewind.linear.sweep import archive_name

    module, c = (pathways, study.pathways) if kind == "pathways" else (completion, study.completion)
    return tuple((str(Path(out) / archive_name(depth, seed)), module.KIND, module.trunk_identity(c, depth, seed))
                 for depth in counts(c.depth, "depth") for seed in counts(c.seeds, "seeds"))


def _brief(settings: dict) -> str:
    return ", ".join(f"{k} {settings[k]}" for k in ("depth", "seeds", "deficit_start", "pretrain_steps")
                     if k in settings)


def execute(plan: launch.Plan, job: launch.Job) -> None:
    from rewind.linear import completion, pathways

    kind = job.args["kind"]
    study = SWEEPS[kind].from_sections(plan.config)
    (pathways if kind == "pathways" else completion).run(study, plan.out)


def summarize(plan: launch.Plan) -> None:
    """The sweep's job writes its tables and figures itself."""

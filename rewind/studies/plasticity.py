"""Warm starting and plasticity (Ash & Adams 2020; Berariu et al. 2021): does training first on part of
the data hurt, and what undoes it?

Every study has one shape. A first phase (the trunk) trains on a seeded subset of the training set
(`--warm-fraction`; its epochs are passes over that subset); arms are branches under its archive
that train the second phase on all the data, with a fresh optimizer (or the first phase's state, `--optimizer-state carry`) and a fresh
learning-rate schedule, starting from one of its checkpoints:

- warm: the trunk's weights;
- shrink-perturb: lam * theta + sigma * theta_fresh (a fresh init);
- reset: the trunk's weights with some layers re-initialised;
- scratch: a fresh init: the baseline each arm's `gap_to_scratch` is measured against, trained
  once per setting (its identity is the second phase alone, so every arm of a setting shares it).

The arms from the trunk's weights start with a fresh network's BatchNorm running statistics, as
Ash & Adams's code does (`--warm-bn-stats fresh`), or with the trunk's (`trained`). With
`--shrink-first` (their code's behaviour) each shrink-perturb arm has a first phase of its own that
starts from a shrunk and perturbed init. An SGD given without a momentum trains with momentum 0
here (`WARM_SGD_MOMENTUM`).

The one-phase studies (the smooth transition, the stages) have no first phase: their arms are
whole runs from the init, the data moving from the subset to all of it inside the run.

`--study` picks what is swept (`STUDIES`); `specs` (`plasticity_arms`: one arm builder per study)
turns a config into the first phases (`Setting`) and the arms (`ArmSpec`) as plain specs; `plan`
lists them as jobs (a first phase, then its arms), `execute` trains one with `train_setting` /
`train_arms` (a branch already complete is read back, never retrained: a new sweep value trains
only its new branches), and `summarize` has `rewind.analysis.plasticity` write the table and the
figure from the archives.

Studies over several first phases (first-phase learning rates, model sizes, replicates) keep one
archive per first phase in a folder of `--out` (`lr0.001/`, `w16-d2/`, `rep-01/`, ...).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rewind import config as cfg
from rewind import launch, seeds, steps
from rewind.archive import run as runs
from rewind.archive.run import open_run
from rewind.studies import common
from rewind.studies.plasticity_arms import ArmSpec, Setting, StudyPlan, layers_to_reset, specs  # noqa: F401
from rewind.studies.plasticity_settings import numbers
from rewind.studies.warm_phases import WARM_SGD_MOMENTUM, first_phase  # noqa: F401
from rewind.train import trunk
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment
from rewind.train.trunk import Setup
from rewind.train.warmstart import ShrinkPerturbAt, fresh_bn_statistics, reset_layers, shrink_perturb, top_groups

ARMS = ("warm", "shrink-perturb", "reset", "scratch")


def train_setting(setting: Setting, out: Path) -> trunk.TrunkResult:
    """The first phase of one setting (trained, resumed, or found complete; checkpoints it lacks are added)."""
    root = out / setting.folder
    result = trunk.train(setting.first, root, extra_saves=setting.saves)
    stage = runs.read(root).stage("trunk")
    missing = [k for k in setting.saves if not stage.has(k)]
    if missing:
        _fill_checkpoints(setting, root, missing)
    return result


def _fill_checkpoints(setting: Setting, root: Path, missing: list[int]) -> None:
    """Add checkpoints a complete trunk lacks (a new `--first-steps` value): each trained from the
    trunk's checkpoint before it, which is bit for bit what saving it the first time would have
    written (the batches are a function of the step and the seeds)."""
    from rewind.train import loop
    from rewind.train.segment import restore

    setup = Setup.create(setting.first)
    with open_run(root, "trunk", setting.first.to_dict(), setting.first.experiment_dict()) as run:
        stage = run.stage("trunk")
        for k in sorted(missing):
            before = max(s for s in stage.steps() if s <= k and stage.has(s, with_state=True))
            state = setup.state(setup.new_model())
            ckpt = restore(state, stage, before)
            loop.run(state, before, k, [], at_start=False)
            stage.save(k, state.model.state_dict(), {"epoch": setup.plan.epoch(k)},
                       {"optimizer": state.optimizer.state_dict(), "rng": ckpt.state["rng"],
                        "train_log": {"loss": 0.0, "correct": 0.0, "count": 0}})


def trunk_end(root: Path) -> int:
    """The trunk's last step: its length, or where stopping by fit ended it."""
    data = runs.read(root).manifest.data
    return int(data.get("final_step", data["total_iterations"]))


def train_arms(arms: list[ArmSpec], out: Path, parallel: int = 1, progress: str = "auto") -> None:
    """Train every arm not yet complete, up to `parallel` together (the replica trainer); the trunks
    must be complete."""
    todo = [a for a in arms if not _complete(out / a.branch)]
    setups: dict[str, Setup] = {}
    # Arms of one setting share a data set, a model and a second-phase length; arms with a data phase
    # of their own (the smooth transition, the stages) train apart from the plain ones.
    for key in dict.fromkeys((a.setting, bool(a.second.train.deficit)) for a in todo):
        group = [a for a in todo if (a.setting, bool(a.second.train.deficit)) == key]
        with ExitStack() as stack:
            branches, segments = [], []
            for a in group:
                key = str(a.second.to_dict())
                setup = setups.setdefault(key, Setup.create(a.second))
                branch = stack.enter_context(open_run(out / a.branch, "warm-start", a.second.to_dict(), a.identity))
                branch.update(study=a.study, arm=a.arm, values=a.values, start=a.start, baseline=a.baseline)
                state = setup.state(start_model(setup, a, out))
                if a.from_first and a.second.warm.optimizer_state == "carry":
                    stage = runs.read(out / a.setting).stage("trunk")
                    step = trunk_end(out / a.setting) if a.start is None else a.start
                    stage.load(step, with_state=True).optimizer_into(state.optimizer)
                branches.append(branch)
                segments.append(Segment(state, branch.stage("second"), 0, setup.test, progress, _label(a),
                                        extra_hooks=_stage_shrink(setup, a)))
            # Runs that stop by fit end at steps of their own; stages reset their optimizer state in the
            # loop, which the stacked trainer does not: both train one at a time.
            alone = any(a.second.train.until_train_acc or "stage_shrink" in a.op or
                        getattr(s.state.phases, "has_optimizer_resets", lambda: False)() for a, s in zip(group, segments))
            results = train_segments(segments, 1 if alone else parallel)
            for branch, result in zip(branches, results):
                branch.complete(final_test=result.final_test, best_test_acc=result.best_test_acc,
                                final_step=result.end, reached_fit=result.reached_fit)


def _stage_shrink(setup: Setup, a: ArmSpec) -> list:
    """Shrink-perturb at the start of each later stage (`--stage-shrink`), as a hook of the arm's run."""
    if "stage_shrink" not in a.op:
        return []
    lam, sigma = a.op["stage_shrink"]
    fresh = setup.new_model(seed=seeds.derive(setup.config.train.model_seed, "warm-fresh"))
    return [ShrinkPerturbAt(set(a.op["boundaries"]), fresh, lam, sigma, setup.config.warm.warm_bn_stats == "fresh")]


def _complete(path: Path) -> bool:
    return (path / runs.MANIFEST).exists() and runs.read(path).status == "complete"


def _label(a: ArmSpec) -> str:
    shown = {k: v for k, v in a.values.items() if k not in ("bn_stats", "first_epochs")}
    return " ".join([a.arm, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())])


def start_model(setup: Setup, a: ArmSpec, out: Path) -> torch.nn.Module:
    """The arm's weights at the start of its second phase: a fresh init for scratch and the arms of a
    one-phase study (shrunk and perturbed as their `second` says)."""
    if not a.from_first:
        return setup.new_model()
    root = out / a.setting
    step = trunk_end(root) if a.start is None else a.start
    first = runs.read(root).stage("trunk").load(step)
    first.into(setup.new_model())  # refused here, naming the file, if it does not fit the model
    return start_from(setup, a.arm, first.tensors, setup.config, a.op)


def start_from(setup: Setup, arm: str, first_weights: dict[str, torch.Tensor], config: cfg.Config,
               op: dict[str, Any] | None = None) -> torch.nn.Module:
    """A model holding `first_weights`, then shrunk and perturbed or partly reset as `arm` and `op` say
    (default `op`: the config's lam, sigma and reset layers), with fresh BatchNorm statistics unless
    `warm_bn_stats` is trained. `scratch` is a fresh init."""
    model = setup.new_model()
    if arm == "scratch":
        return model
    w = config.warm
    op = op or {}
    keys = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in first_weights.items() if k in keys})
    # A fresh init distinct from the trunk's own init (which `scratch` uses).
    fresh = setup.new_model(seed=seeds.derive(config.train.model_seed, "warm-fresh"))
    if arm == "shrink-perturb":
        shrink_perturb(model, fresh, op.get("lam", numbers(w.shrink, "shrink")[0]),
                       op.get("sigma", numbers(w.perturb_sigma, "perturb_sigma")[0]))
    elif arm == "reset":
        layers = top_groups(model, op["reset_from"]) if "reset_from" in op else layers_to_reset(config, model)
        reset_layers(model, fresh, layers)
    if w.warm_bn_stats == "fresh":
        fresh_bn_statistics(model, fresh)
    return model


def plan(config: cfg.Config, out: str | Path) -> launch.Plan:
    """The study as jobs: each first phase (holding the checkpoints its arms start from), then its
    arms (after it), `--parallel` of them to a job; a one-phase study's arms alone."""
    p, jobs = specs(config), []
    for s in p.settings:
        name = f"{s.folder}/first-phase" if s.folder else "first-phase"
        root = Path(out) / s.folder
        if s.trains:
            jobs.append(launch.Job(name, str(root), common.trunk_description(s.first, trunk.train_count(s.first),
                                                                             s.saves),
                                   {"kind": "first", "folder": s.folder}, expect=common.expect_trunk(s.first, root),
                                   holds=s.saves))
        ipe = steps.iterations_per_epoch(trunk.train_count(s.config), s.config.train.batch_size)
        for chunk in common.chunks([a for a in p.arms if a.setting == s.folder], config.study.parallel):
            what = "; ".join(f"{_label(a)}: {steps.format(steps.parse(a.second.train.steps, ipe), ipe)} on all the data"
                             for a in chunk)
            jobs.append(launch.Job(f"{s.folder + '/' if s.folder else ''}{'+'.join(_job_name(a) for a in chunk)}",
                                   str(Path(out) / chunk[0].branch), what,
                                   {"kind": "arms", "branches": [a.branch for a in chunk]},
                                   after=(name,) if s.trains else (),
                                   more=tuple(str(Path(out) / a.branch) for a in chunk[1:])))
    return launch.Plan("rewind.studies.plasticity", str(out), config.to_dict(), tuple(jobs))


def _job_name(a: ArmSpec) -> str:
    return a.branch.rsplit("/", 1)[-1].removeprefix("warm-")


def execute(job_plan: launch.Plan, job: launch.Job) -> None:
    """Train one job: a first phase (and the checkpoints it lacks), or arms."""
    config, out = cfg.from_sections(job_plan.config), Path(job_plan.out)
    p = specs(config)
    if job.args["kind"] == "first":
        train_setting(next(s for s in p.settings if s.folder == job.args["folder"]), out)
        return
    arms = [a for a in p.arms if a.branch in job.args["branches"]]
    train_arms(arms, out, config.study.parallel, config.runtime.progress)


def summarize(job_plan: launch.Plan) -> pd.DataFrame:
    """arms.csv, results.csv and the figure from the arms' archives; returns results.csv's table."""
    from rewind.analysis import plasticity as report

    config = cfg.from_sections(job_plan.config)
    p = specs(config)
    arms = [{"study": a.study, "arm": a.arm, "values": a.values, "branch": a.branch, "baseline": a.baseline,
             "first": a.setting if a.from_first else None, "until_train_acc": a.second.train.until_train_acc}
            for a in p.arms]
    configs = [s.config for s in p.settings]
    about = {"model": configs[0].model.model, "optimizers": list(dict.fromkeys(c.train.optimizer for c in configs)),
             "warm_fraction": configs[0].warm.warm_fraction}
    return report.write(p.study, arms, Path(job_plan.out), config.warm.last_evals, about)


def run(config: cfg.Config, out: str | Path) -> pd.DataFrame:
    """Train the study of `config` (`warm.study`) into `out` in this process; returns its table (also
    results.csv and the figure, and warm_start.csv for the four arms)."""
    return common.run(plan(config, out))

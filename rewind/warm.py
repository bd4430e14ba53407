"""Warm starting (Ash & Adams 2020; Berariu et al. 2021): does training first on part of the data hurt?

The trunk trains on a seeded subset of the training set. Every arm then trains on all of it for
the same budget, with a fresh optimizer and a fresh learning-rate schedule, starting from:

- warm: the trunk's final weights;
- shrink-perturb: lam * theta + sigma * theta_fresh (a fresh init);
- reset: the trunk's weights with the chosen layers re-initialised;
- scratch: a fresh init (the baseline the others are compared with).

The arms from the trunk's weights start with a fresh network's BatchNorm running statistics, as
Ash & Adams's code does (`--warm-bn-stats fresh`), or with the trunk's (`trained`).

All arms read the same first-phase checkpoint of the trunk; each is a branch under it.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import torch

from rewind import config as cfg
from rewind import launch, models, seeds
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.run import open_run
from rewind.errors import UserError
from rewind.train import trunk
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment
from rewind.train.trunk import Setup
from rewind.train.warmstart import fresh_bn_statistics, reset_layers, shrink_perturb

ARMS = ("warm", "shrink-perturb", "reset", "scratch")


def run(config: cfg.Config, out: str | Path) -> pd.DataFrame:
    w, out = config.warm, Path(out)
    first = config.with_values(deficit=f"subset(fraction={w.warm_fraction},seed={w.warm_seed}):0it-")
    trunk.train(first, out)
    trunk_run = runs.read(out)
    first_weights = trunk_run.stage("trunk").load(trunk_run.manifest.data["total_iterations"]).tensors
    kind = config.train.optimizer if w.second_optimizer == "same" else w.second_optimizer
    second = config.with_values(steps=w.second_steps).with_optimizer(kind, w.second_lr)
    setup = Setup.create(second)
    with ExitStack() as stack:
        branches, segments = [], []
        for arm in ARMS:
            identity = {"trunk": first.hash(), "arm": arm, "second": second.hash(),
                        **({"lam": w.shrink, "sigma": w.perturb_sigma} if arm == "shrink-perturb" else {}),
                        **({"reset": w.reset_layers} if arm == "reset" else {}),
                        # trained statistics: the identity the arms had before the option
                        **({"bn_stats": "fresh"} if arm != "scratch" and w.warm_bn_stats == "fresh" else {})}
            path = out / "branches" / f"warm-{arm}-{runs.identity_hash(identity)[:8]}"
            branch = stack.enter_context(open_run(path, "warm-start", second.to_dict(), identity))
            state = setup.state(_start(setup, arm, first_weights, config))
            branches.append(branch)
            segments.append(Segment(state, branch.stage("second"), 0, setup.test, config.runtime.progress, arm))
        # The arms share the second phase's length, so up to --parallel of them train together.
        results = train_segments(segments, config.study.parallel)
        rows = []
        for arm, branch, result in zip(ARMS, branches, results):
            branch.update(status="complete", final_test=result.final_test)
            rows.append({"arm": arm, "bn_stats": "fresh" if arm == "scratch" else w.warm_bn_stats,
                         "final_test_acc": result.final_test["acc"], "best_test_acc": result.best_test_acc})
    table = pd.DataFrame(rows)
    scratch = table.set_index("arm").loc["scratch", "final_test_acc"]
    table["gap_to_scratch"] = table["final_test_acc"] - scratch
    write_text(out / "warm_start.csv", table.to_csv(index=False))
    return table


def plan(config: cfg.Config, out: str | Path) -> launch.Plan:
    """The study as one job: the first phase, then the four arms in one process (`--parallel`
    trains them together), complete once it has finished under these settings."""
    w = config.warm
    settings = {k: v for k, v in config.to_dict().items() if k not in ("runtime", "launch")}
    job = launch.Job("warm-start", str(out), f"first phase on {w.warm_fraction:g} of the data ({config.train.steps}), "
                     f"then {', '.join(ARMS)} on all of it ({w.second_steps} each)",
                     marker=str(Path(out) / "launch" / f"done-warm-{runs.identity_hash(settings)}.json"))
    return launch.Plan("rewind.warm", str(out), config.to_dict(), (job,))


def execute(plan: launch.Plan, job: launch.Job) -> None:
    run(cfg.from_sections(plan.config), plan.out)


def summarize(plan: launch.Plan) -> None:
    """The study's job writes warm_start.csv itself."""


def layers_to_reset(config: cfg.Config, model: torch.nn.Module) -> list[str]:
    names = [p.strip() for p in config.warm.reset_layers.split(",") if p.strip()]
    if names != ["top-stage"]:
        return names
    if not hasattr(model, "stages"):
        raise UserError(f"{config.model.model} has no stages: name the layers to reset with --reset-layers, "
                        "e.g. 'fc' (the model's modules are listed by `rewind runs show`)")
    return [f"blocks.{i}" for i in model.stages[-1]] + [models.head(model)]


def _start(setup: Setup, arm: str, first_weights, config: cfg.Config):
    model = setup.new_model()
    if arm == "scratch":
        return model
    keys = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in first_weights.items() if k in keys})
    # A fresh init distinct from the trunk's own init (which `scratch` uses).
    fresh = setup.new_model(seed=seeds.derive(config.train.model_seed, "warm-fresh"))
    if arm == "shrink-perturb":
        shrink_perturb(model, fresh, config.warm.shrink, config.warm.perturb_sigma)
    elif arm == "reset":
        reset_layers(model, fresh, layers_to_reset(config, model))
    if config.warm.warm_bn_stats == "fresh":
        fresh_bn_statistics(model, fresh)
    return model

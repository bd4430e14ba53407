"""Warm starting and plasticity (Ash & Adams 2020; Berariu et al. 2021): does training first on part of
the data hurt, and what undoes it?

Every study has one shape. A first phase (the trunk) trains on a seeded subset of the training set
(`--warm-fraction`; its epochs are passes over that subset); arms are branches under its archive that train the second phase on all the data,
with a fresh optimizer (or the first phase's state, `--optimizer-state carry`) and a fresh
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

`--study` picks what is swept (`STUDIES`); `specs` turns a config into the trunks (`Setting`) and the
arms (`ArmSpec`) as plain specs, `train_setting` / `train_arms` train them (a branch already complete
is read back, never retrained: a new sweep value trains only its new branches), and
`rewind.analysis.plasticity` writes the table and the figure from the archives; `plan` lists
the same runs as jobs for `rewind.launch` (a first phase, then its arms).

Studies over several first phases (first-phase learning rates, model sizes, replicates) keep one
archive per first phase in a folder of `--out` (`lr0.001/`, `w16-d2/`, `rep-01/`, ...).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rewind import config as cfg
from rewind.studies.plasticity_settings import STUDIES, check_used, numbers
from rewind import launch, models, seeds, steps
from rewind.studies import imp
from rewind.studies.warm_phases import (WARM_SGD_MOMENTUM, first_phase, optimizer_values, second_phase,  # noqa: F401
                                        sgd_momentum, stage_ends, stages, transition)
from rewind.archive import run as runs
from rewind.archive.run import open_run
from rewind.data.sources import num_classes
from rewind.errors import UserError
from rewind.train import trunk
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment
from rewind.train.trunk import Setup
from rewind.train.warmstart import (ShrinkPerturbAt, check_layers, fresh_bn_statistics, layer_groups, reset_layers,
                                    shrink_perturb, top_groups)

ARMS = ("warm", "shrink-perturb", "reset", "scratch")


@dataclass(frozen=True)
class Setting:
    """One first phase of a study: its archive folder (relative to `--out`; '' is `--out` itself),
    the values it is swept at, the study config at those values and the first phase's config."""

    folder: str
    values: dict[str, Any]
    config: cfg.Config
    first: cfg.Config
    saves: tuple[int, ...] = ()  # extra checkpoint steps the arms branch from


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a branch under its setting's trunk, trained by itself (a job for an executor).

    `start`: the trunk checkpoint it starts from (None: the trunk's last, which stopping by fit may
    move; unused for scratch); `op`: what is done to those weights (shrink-perturb's lam and sigma,
    the layers reset); `baseline`: the branch of the scratch arm it is compared with."""

    study: str
    arm: str
    values: dict[str, Any]
    setting: str
    start: int | None
    op: dict[str, Any]
    second: cfg.Config
    identity: dict[str, Any]
    baseline: str = ""

    @property
    def branch(self) -> str:
        """Its folder relative to `--out`."""
        prefix = f"{self.setting}/" if self.setting else ""
        return f"{prefix}branches/warm-{self.arm}-{runs.identity_hash(self.identity)[:8]}"


@dataclass
class StudyPlan:
    study: str
    settings: list[Setting]
    arms: list[ArmSpec] = field(default_factory=list)


def settings(config: cfg.Config) -> list[Setting]:
    """The study's first phases: one per first-phase learning rate (lr), model size (size) and replicate."""
    w, study = config.warm, config.warm.study
    axes: list[list[dict[str, Any]]] = []
    if w.optimizers:
        axes.append(optimizer_values(config))
    if study == "lr":
        axes.append([{"first_lr": lr} for lr in numbers(w.first_lr, "first_lr") or [config.train.lr]])
    if study == "size":
        spec = models.check(config.model.model, config.model.width, config.model.blocks)
        widths = numbers(w.widths, "widths", int, 1) or [config.model.width or spec.default_width]
        depths = numbers(w.depths, "depths", int, 1)
        if depths and not spec.takes_blocks:
            raise UserError(f"--depths sets resnet18's blocks per stage; {config.model.model}'s depth is in its "
                            "name: drop --depths, or use --model resnet18")
        axes.append([{"width": a, "blocks": b} for a in widths for b in depths or [config.model.blocks or
                                                                                  (2 if spec.takes_blocks else 0)]])
    r = config.study.replicates
    if r > 1:
        axes.append([{"replicate": i} for i in range(r)])
    out = []
    for combo in product(*axes):
        values = {k: v for part in combo for k, v in part.items()}
        c = cfg.replicate(config, values.get("replicate", 0))
        if "optimizer" in values:
            c = c.with_optimizer(values["optimizer"], values["optimizer_lr"], second_optimizer="same", optimizers="")
            if values["optimizer_momentum"] is not None:
                c = c.with_values(momentum=values["optimizer_momentum"])
        if "first_lr" in values:
            c = c.with_values(lr=values["first_lr"])
        if "width" in values:
            c = c.with_values(width=values["width"], blocks=values["blocks"] if models.spec(
                c.model.model).takes_blocks else 0)
        c = sgd_momentum(c)
        first = first_phase(c)
        if study in ("transition", "stages"):  # one run from the init: the first phase is its iteration 0
            first = first.with_values(steps="0it")
        out.append(Setting(_folder(values) if axes else "", values, c, first))
    if twice := next((s.folder for i, s in enumerate(out) if s.folder in [o.folder for o in out[:i]]), None):
        raise UserError(f"two first phases of this study are one ({twice}): a value is listed twice, e.g. "
                        "'sgd' and 'sgd:LR' at --lr LR in --optimizers; give it once")
    return out


def _shrunk_firsts(setting: Setting, study: str) -> dict[tuple[float, float], Setting]:
    """With `--shrink-first`: per (lam, sigma) of the study's shrink-perturb arms, a first phase of
    their own that starts from lam * theta0 + sigma * theta0' (Ash & Adams's code shrinks and perturbs
    at every round, the first included), in a folder beside the setting's."""
    w = setting.config.warm
    lams, sigmas = numbers(w.shrink, "shrink"), numbers(w.perturb_sigma, "perturb_sigma")
    pairs = list(product(lams, sigmas)) if study == "shrink" else [(lams[0], sigmas[0])]
    out = {}
    for lam, sigma in pairs:
        folder = f"{setting.folder + '-' if setting.folder else ''}shrunk-first-{lam:g}-{sigma:g}"
        out[(lam, sigma)] = Setting(folder, setting.values, setting.config,
                                    setting.first.with_values(init_shrink=lam, init_perturb=sigma))
    return out


def _folder(values: dict[str, Any]) -> str:
    parts = []
    if "optimizer" in values:
        momentum = values.get("optimizer_momentum")
        parts.append(f"{values['optimizer']}{values['optimizer_lr']:g}" + ("" if momentum is None else f"-m{momentum:g}"))
    if "first_lr" in values:
        parts.append(f"lr{values['first_lr']:g}")
    if "width" in values:
        parts.append(f"w{values['width']}" + (f"-d{values['blocks']}" if values["blocks"] else ""))
    if "replicate" in values:
        parts.append(f"rep-{values['replicate']:02d}")
    return "-".join(parts)


def specs(config: cfg.Config) -> StudyPlan:
    """The trunks and arms of `config`'s study: everything a run trains, as plain specs."""
    study = config.warm.study
    _check(config)
    result = StudyPlan(study, [])
    seen: dict[str, ArmSpec] = {}
    kept: dict[str, str] = {}  # branch -> the branch trained for it (itself, or an earlier one of its identity)
    for setting in settings(config):
        batch = setting.config.train.batch_size
        ipe = steps.iterations_per_epoch(trunk.train_count(setting.config), batch)  # of all the data
        first_ipe = steps.iterations_per_epoch(trunk.train_count(setting.first), batch)  # of the first phase's
        length = steps.parse(setting.first.train.steps, first_ipe, "steps")
        saves: tuple[int, ...] = ()
        if study == "length":
            saves = tuple(first_points(config, first_ipe))
            if saves[-1] > length:
                raise UserError(f"--first-steps {config.warm.first_steps} goes beyond the first phase (--steps "
                                f"{config.train.steps}, {length} iterations); lengthen --steps or drop the longer ones")
        result.settings.append(Setting(setting.folder, setting.values, setting.config, setting.first, saves))
        shrunk = _shrunk_firsts(setting, study) if config.warm.shrink_first else {}
        result.settings += shrunk.values()
        for arm in _arms(setting, study, length, saves, (first_ipe, ipe), shrunk):
            key = runs.identity_hash(arm.identity)
            if key not in seen:  # a scratch arm shared by first phases (lr study) is trained once
                seen[key] = arm
                result.arms.append(arm)
            kept[arm.branch] = seen[key].branch
    result.arms = [ArmSpec(**{**a.__dict__, "baseline": kept[a.baseline]}) for a in result.arms]
    return result


def first_points(config: cfg.Config, ipe: int) -> list[int]:
    """The length study's first-phase lengths in iterations (a bare number takes the unit written last;
    `ipe`: iterations per epoch of the first phase's subset)."""
    return steps.points(config.warm.first_steps or config.train.steps, ipe, "first_steps")


def _check(config: cfg.Config) -> None:
    w, study = config.warm, config.warm.study
    check_used(config)
    if study == "arms":  # the reset arm's layers, named before anything trains
        model = models.build(config.model.model, config.model.width or 0, blocks=config.model.blocks)
        check_layers(model, layers_to_reset(config, model))
    if study == "stages":  # n stages and the final one each add a group of classes
        classes = num_classes(config.data.source)
        if max(numbers(w.stages, "stages", int, 1)) + 1 > classes:
            raise UserError(f"--stages {w.stages}: n stages need n + 1 class groups, and {config.data.source} has "
                            f"{classes} classes; use at most {classes - 1} stages")
    if study == "length" and config.train.until_train_acc:
        raise UserError("--study length sets the first phase's lengths (--first-steps), --until-train-acc stops it "
                        "by fit: use one of them (--until-train-acc 0 turns it off)")
    if config.data.train_fraction != 1.0:
        raise UserError("warm-start trains its first phase on --warm-fraction of the data and the second on all "
                        "of it: drop --train-fraction")
    if w.shrink_first and not (study in ("arms", "shrink") or (study == "stages" and w.stage_shrink)):
        raise UserError(f"--shrink-first shrinks and perturbs the init of the shrink-perturb arms' first phase; "
                        f"--study {study} has none (studies arms and shrink, or stages with --stage-shrink)")
    if w.optimizer_state == "carry":
        second = second_phase(config)
        if second.train.optimizer != config.train.optimizer:
            raise UserError(f"--optimizer-state carry needs one optimizer in both phases; the first phase uses "
                            f"{config.train.optimizer}, the second {second.train.optimizer}")


def _arms(setting: Setting, study: str, length: int, saves: tuple[int, ...], ipes: tuple[int, int],
          shrunk: dict[tuple[float, float], Setting]) -> list[ArmSpec]:
    """The arms of one first phase (`length` iterations, checkpoints `saves`; `ipes`: iterations an
    epoch of the first phase's subset and of the full training set), each with its scratch baseline;
    the shrink-perturb arms from the first phases of `shrunk` (`--shrink-first`) where it has theirs."""
    c, w = setting.config, setting.config.warm
    first_ipe, ipe = ipes
    values = dict(setting.values)
    legacy = study == "arms"  # today's four arms keep the identities their archives were made with

    def arm(name: str, second: cfg.Config, extra: dict[str, Any], op: dict[str, Any] | None = None,
            start: int | None = None, op_identity: dict[str, Any] | None = None,
            versus: cfg.Config | None = None, first: Setting = setting) -> ArmSpec:
        """The arm, from the first phase `first`; its `baseline` is, for now, the second phase of the
        scratch arm it is compared with (`versus`, default its own), as a hash."""
        op = op or {}
        key = (versus or second).hash()
        if name == "scratch":
            identity = {"arm": "scratch", "second": second.hash()}
            if legacy:
                identity["trunk"] = setting.first.hash()
            own = {k: v for k, v in values.items() if k != "first_lr"}  # the scratch arm has no first phase
            return ArmSpec(study, name, {**own, **extra}, setting.folder, None, {}, second, identity, key)
        identity = {"trunk": first.first.hash(), "arm": name, "second": second.hash(), **(op_identity or {}),
                    **({"bn_stats": "fresh"} if w.warm_bn_stats == "fresh" else {}),
                    **({"start": start} if start is not None and start != length else {}),
                    **({"optimizer_state": "carry"} if w.optimizer_state == "carry" else {})}
        return ArmSpec(study, name, {**values, **extra}, first.folder, start, op, second, identity, key)

    second = second_phase(c)
    lam, sigma = numbers(w.shrink, "shrink")[0], numbers(w.perturb_sigma, "perturb_sigma")[0]
    bn = {"bn_stats": w.warm_bn_stats} if legacy else {}
    if study == "arms":
        arms = [arm("warm", second, bn),
                arm("shrink-perturb", second, bn, {"lam": lam, "sigma": sigma}, op_identity={"lam": lam, "sigma": sigma},
                    first=shrunk.get((lam, sigma), setting)),
                arm("reset", second, bn, {"reset": w.reset_layers}, op_identity={"reset": w.reset_layers}),
                arm("scratch", second, {"bn_stats": "fresh"})]
    elif study == "length":
        arms = [arm("warm", second, {"first_steps": k, "first_epochs": k / first_ipe}, start=k) for k in saves]
        arms.append(arm("scratch", second, {}))
    elif study == "reset":
        groups = len(layer_groups(_model(setting)))
        js = numbers(w.reset_from, "reset_from", int, 1) or list(range(1, groups + 1))
        if max(js) > groups:
            raise UserError(f"--reset-from {w.reset_from}: {c.model.model} has layer groups 1..{groups}")
        arms = [arm("warm", second, {"reset_from": groups + 1, "groups_reset": 0})]
        arms += [arm("reset", second, {"reset_from": j, "groups_reset": groups - j + 1}, {"reset_from": j},
                     op_identity={"reset": f"groups:{j}-{groups}"}) for j in sorted(set(js), reverse=True)]
        arms.append(arm("scratch", second, {}))
    elif study == "shrink":
        arms = [arm("warm", second, {"lam": 1.0, "sigma": 0.0})]
        arms += [arm("shrink-perturb", second, {"lam": a, "sigma": s}, {"lam": a, "sigma": s},
                     op_identity={"lam": a, "sigma": s}, first=shrunk.get((a, s), setting))
                 for a in numbers(w.shrink, "shrink") for s in numbers(w.perturb_sigma, "perturb_sigma")]
        arms.append(arm("scratch", second, {}))
    elif study == "lr":
        arms = []
        for lr in numbers(w.second_lr, "second_lr") or [c.train.lr]:
            second = second_phase(c, lr)
            arms += [arm("warm", second, {"second_lr": lr}), arm("scratch", second, {"second_lr": lr})]
    elif study == "size":
        arms = [arm("warm", second, {}), arm("scratch", second, {})]
    elif study == "transition":
        total = steps.parse(w.second_steps, ipe, "second_steps")
        arms = [arm("transition", second.with_values(deficit=transition(c, g, total)), {"gamma": g}, versus=second)
                for g in numbers(w.transition_gamma, "transition_gamma")]
        arms.append(arm("scratch", second, {}))
    elif study == "stages":
        final = steps.parse(w.second_steps, ipe, "second_steps")
        shrink = {"stage_shrink": [lam, sigma]} if w.stage_shrink else {}
        arms = []
        for n in numbers(w.stages, "stages", int, 1):
            for r in numbers(w.stage_ratio, "stage_ratio"):
                ends = stage_ends(second, n, r, c.train.steps)
                arms.append(arm("stages", second.with_values(steps=f"{ends[-1] + final}it", deficit=stages(c, n, r, ends)),
                                {"stages": n, "stage_ratio": r, **({"lam": lam, "sigma": sigma} if shrink else {})},
                                {**shrink, "boundaries": ends} if shrink else {}, op_identity=shrink, versus=second,
                                first=shrunk.get((lam, sigma), setting)))
        arms.append(arm("scratch", second, {}))
    else:
        raise UserError(f"unknown study {study!r}; studies: {', '.join(STUDIES)}")
    # Each arm is compared with the scratch arm of its setting and second phase.
    scratch = {a.baseline: a.branch for a in arms if a.arm == "scratch"}
    return [ArmSpec(**{**a.__dict__, "baseline": scratch[a.baseline]}) for a in arms]


def _model(setting: Setting) -> torch.nn.Module:
    c, data = setting.config, trunk.load_data(setting.config)
    return models.build(c.model.model, c.model.width, data.num_classes, 0, blocks=c.model.blocks,
                        in_channels=data.in_channels, image_size=data.image_size)


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
                if a.arm != "scratch" and a.second.warm.optimizer_state == "carry":
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
    """The arm's weights at the start of its second phase."""
    if a.arm == "scratch":
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


def layers_to_reset(config: cfg.Config, model: torch.nn.Module) -> list[str]:
    names = [p.strip() for p in config.warm.reset_layers.split(",") if p.strip()]
    if names != ["top-stage"]:
        return names
    if not hasattr(model, "stages"):
        raise UserError(f"{config.model.model} has no stages: name the layers to reset with --reset-layers, "
                        "e.g. 'fc' (the model's modules are listed by `rewind runs show`)")
    return [f"blocks.{i}" for i in model.stages[-1]] + [models.head(model)]


def plan(config: cfg.Config, out: str | Path) -> launch.Plan:
    """The study as jobs: each first phase, then its arms (after it), `--parallel` of them to a job."""
    p, jobs = specs(config), []
    ipe_of = {s.folder: steps.iterations_per_epoch(trunk.train_count(s.config), s.config.train.batch_size)
              for s in p.settings}
    for s in p.settings:
        name = f"{s.folder}/first-phase" if s.folder else "first-phase"
        jobs.append(launch.Job(name, str(Path(out) / s.folder),
                               imp.trunk_description(s.first, trunk.train_count(s.first), list(s.saves)),
                               {"kind": "first", "folder": s.folder},
                               expect=imp.expect_trunk(s.first, Path(out) / s.folder)))
        arms = [a for a in p.arms if a.setting == s.folder]
        size = max(1, config.study.parallel)
        for chunk in (arms[j:j + size] for j in range(0, len(arms), size)):
            ipe = ipe_of[s.folder]
            what = "; ".join(f"{_label(a)}: {steps.format(steps.parse(a.second.train.steps, ipe), ipe)} on all the data"
                             for a in chunk)
            jobs.append(launch.Job(f"{s.folder + '/' if s.folder else ''}{'+'.join(_job_name(a) for a in chunk)}",
                                   str(Path(out) / chunk[0].branch), what,
                                   {"kind": "arms", "branches": [a.branch for a in chunk]}, after=(name,),
                                   more=tuple(str(Path(out) / a.branch) for a in chunk[1:])))
    return launch.Plan("rewind.studies.plasticity", str(out), config.to_dict(), tuple(jobs))


def _job_name(a: ArmSpec) -> str:
    return a.branch.rsplit("/", 1)[-1].removeprefix("warm-")


def execute(job_plan: launch.Plan, job: launch.Job) -> None:
    config, out = cfg.from_sections(job_plan.config), Path(job_plan.out)
    p = specs(config)
    if job.args["kind"] == "first":
        train_setting(next(s for s in p.settings if s.folder == job.args["folder"]), out)
        return
    arms = [a for a in p.arms if a.branch in job.args["branches"]]
    train_arms(arms, out, config.study.parallel, config.runtime.progress)


def summarize(job_plan: launch.Plan) -> None:
    from rewind.analysis import plasticity as report

    config = cfg.from_sections(job_plan.config)
    report.write(specs(config), Path(job_plan.out), config.warm.last_evals)


def run(config: cfg.Config, out: str | Path) -> pd.DataFrame:
    """Train the study of `config` (`warm.study`) into `out`; returns its table (also results.csv and
    the figure, and warm_start.csv for the four arms)."""
    from rewind.analysis import plasticity as report

    out = Path(out)
    p = specs(config)
    for setting in p.settings:
        train_setting(setting, out)
    train_arms(p.arms, out, config.study.parallel, config.runtime.progress)
    return report.write(p, out, config.warm.last_evals)

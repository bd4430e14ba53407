"""What each plasticity study trains, as plain specs: its first phases (`Setting`) and its arms
(`ArmSpec`), built by one small function per study (`BUILDERS`).

A first phase (the trunk) trains on a seeded subset of the training set; an arm is a branch that
trains the second phase on all the data, from one of the first phase's checkpoints (warm, shrunk and
perturbed, partly reset) or from a fresh init (scratch, the baseline each arm's `gap_to_scratch` is
measured against, trained once per setting). The one-phase studies (`ONE_PHASE`: the smooth
transition, the stages) have no first phase: their arms are whole runs from the init, the data
schedule moving from the subset to all the data inside the run.

Studies over several first phases (first-phase learning rates, model sizes, optimizers, replicates)
keep one archive per first phase in a folder of `--out` (`lr0.001/`, `w16-d2/`, `rep-01/`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any, Callable

from rewind import config as cfg
from rewind import models, steps
from rewind.archive.run import identity_hash
from rewind.data.sources import num_classes
from rewind.errors import UserError
from rewind.studies.plasticity_settings import STUDIES, check_used, numbers
from rewind.studies.warm_phases import (first_phase, optimizer_values, second_phase, sgd_momentum, stage_ends, stages,
                                        transition)
from rewind.train import trunk
from rewind.train.warmstart import check_layers, layer_groups

ONE_PHASE = ("transition", "stages")  # studies whose arms are whole runs from the init


@dataclass(frozen=True)
class Setting:
    """One first phase of a study: its archive folder (relative to `--out`; '' is `--out` itself),
    the values it is swept at, the study config at those values and the first phase's config;
    `trains`: whether it is trained (a one-phase study's arms only start from its init)."""

    folder: str
    values: dict[str, Any]
    config: cfg.Config
    first: cfg.Config
    saves: tuple[int, ...] = ()  # extra checkpoint steps the arms branch from
    trains: bool = True


@dataclass(frozen=True)
class ArmSpec:
    """One arm: a branch in its setting's folder, trained by itself (a job for an executor).

    `from_first`: it starts from the first phase whose archive is `setting` (else from an init:
    scratch, and the arms of a one-phase study); `start`: that trunk's checkpoint (None: its last,
    which stopping by fit may move); `op`: what is done to those weights (shrink-perturb's lam and
    sigma, the layers reset); `baseline`: the branch of the scratch arm it is compared with."""

    study: str
    arm: str
    values: dict[str, Any]
    setting: str
    start: int | None
    op: dict[str, Any]
    second: cfg.Config
    identity: dict[str, Any]
    baseline: str = ""
    from_first: bool = True

    @property
    def branch(self) -> str:
        """Its folder relative to `--out`."""
        prefix = f"{self.setting}/" if self.setting else ""
        return f"{prefix}branches/warm-{self.arm}-{identity_hash(self.identity)[:8]}"


@dataclass
class StudyPlan:
    study: str
    settings: list[Setting]
    arms: list[ArmSpec] = field(default_factory=list)


def specs(config: cfg.Config) -> StudyPlan:
    """The first phases and arms of `config`'s study (`warm.study`): everything a run trains, as plain specs."""
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
            saves = tuple(steps.points(config.warm.first_steps or config.train.steps, first_ipe, "first_steps"))
            if saves[-1] > length:
                raise UserError(f"--first-steps {config.warm.first_steps} goes beyond the first phase (--steps "
                                f"{config.train.steps}, {length} iterations); lengthen --steps or drop the longer ones")
        setting = replace(setting, saves=saves, trains=study not in ONE_PHASE)
        shrunk = _shrunk_firsts(setting, study) if config.warm.shrink_first else {}
        result.settings += [setting, *shrunk.values()]
        for arm in _with_baselines(BUILDERS[study](Arms(setting, study, length, first_ipe, ipe, shrunk))):
            key = identity_hash(arm.identity)
            if key not in seen:  # a scratch arm shared by first phases (lr study) is trained once
                seen[key] = arm
                result.arms.append(arm)
            kept[arm.branch] = seen[key].branch
    result.arms = [replace(a, baseline=kept[a.baseline]) for a in result.arms]
    return result


def settings(config: cfg.Config) -> list[Setting]:
    """The study's first phases: one per optimizer (`--optimizers`), first-phase learning rate (lr),
    model size (size) and replicate."""
    w, study = config.warm, config.warm.study
    axes: list[list[dict[str, Any]]] = []
    if w.optimizers:
        axes.append(optimizer_values(config))
    if study == "lr":
        axes.append([{"first_lr": lr} for lr in numbers(w.first_lr, "first_lr") or [config.train.lr]])
    if study == "size":
        name = models.check(config.model.model, config.model.width, config.model.blocks)
        widths = numbers(w.widths, "widths", int, 1) or [config.model.width or name.default_width]
        depths = numbers(w.depths, "depths", int, 1)
        if depths and not name.takes_blocks:
            raise UserError(f"--depths sets resnet18's blocks per stage; {config.model.model}'s depth is in its "
                            "name: drop --depths, or use --model resnet18")
        axes.append([{"width": a, "blocks": b} for a in widths for b in depths or [config.model.blocks or
                                                                                  (2 if name.takes_blocks else 0)]])
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
            takes_blocks = models.check(c.model.model).takes_blocks
            c = c.with_values(width=values["width"], blocks=values["blocks"] if takes_blocks else 0)
        c = sgd_momentum(c)
        out.append(Setting(_folder(values) if axes else "", values, c, first_phase(c)))
    if twice := next((s.folder for i, s in enumerate(out) if s.folder in [o.folder for o in out[:i]]), None):
        raise UserError(f"two first phases of this study are one ({twice}): a value is listed twice, e.g. "
                        "'sgd' and 'sgd:LR' at --lr LR in --optimizers; give it once")
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


def _shrunk_firsts(setting: Setting, study: str) -> dict[tuple[float, float], Setting]:
    """With `--shrink-first`: per (lam, sigma) of the study's shrink-perturb arms, a first phase of
    their own that starts from lam * theta0 + sigma * theta0' (Ash & Adams's code shrinks and perturbs
    at every round, the first included), in a folder beside the setting's. A one-phase study's arms
    start from that init themselves (`Arms.arm`)."""
    w = setting.config.warm
    lams, sigmas = numbers(w.shrink, "shrink"), numbers(w.perturb_sigma, "perturb_sigma")
    pairs = list(product(lams, sigmas)) if study == "shrink" else [(lams[0], sigmas[0])]
    out = {}
    for lam, sigma in pairs:
        folder = f"{setting.folder + '-' if setting.folder else ''}shrunk-first-{lam:g}-{sigma:g}"
        out[(lam, sigma)] = replace(setting, folder=folder, first=setting.first.with_values(init_shrink=lam,
                                                                                             init_perturb=sigma))
    return out


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


def layers_to_reset(config: cfg.Config, model) -> list[str]:
    """The reset arm's layers (`--reset-layers`): top-stage is the last stage's blocks and the head."""
    names = [p.strip() for p in config.warm.reset_layers.split(",") if p.strip()]
    if names != ["top-stage"]:
        return names
    if not hasattr(model, "stages"):
        raise UserError(f"{config.model.model} has no stages: name the layers to reset with --reset-layers, "
                        "e.g. 'fc' (the model's modules are listed by `rewind runs show`)")
    return [f"blocks.{i}" for i in model.stages[-1]] + [models.head(model)]


@dataclass(frozen=True)
class Arms:
    """What the arm builders of one first phase read: the setting, the study, the first phase's
    length in iterations, iterations per epoch of its subset and of all the data, and the first phases
    of `--shrink-first` (by lam and sigma)."""

    setting: Setting
    study: str
    length: int
    first_ipe: int
    ipe: int
    shrunk: dict[tuple[float, float], Setting]

    @property
    def c(self) -> cfg.Config:
        return self.setting.config

    @property
    def w(self):
        return self.setting.config.warm

    def lam_sigma(self) -> tuple[float, float]:
        """The first lambda and sigma: shrink-perturb's where one pair is used."""
        return numbers(self.w.shrink, "shrink")[0], numbers(self.w.perturb_sigma, "perturb_sigma")[0]

    def arm(self, name: str, second: cfg.Config, extra: dict[str, Any], op: dict[str, Any] | None = None,
            start: int | None = None, op_identity: dict[str, Any] | None = None,
            versus: cfg.Config | None = None, first: Setting | None = None) -> ArmSpec:
        """The arm `name` training `second` (its values `extra` beside the setting's), from the first phase
        `first` (default the setting's; a one-phase study's arm from that first phase's init, a scratch
        arm from a fresh one); its `baseline` is, for now, the hash of the second phase of the scratch arm
        it is compared with (`versus`, default its own)."""
        first, legacy = first or self.setting, self.study == "arms"  # the four arms keep their archives' identities
        op, key = op or {}, (versus or second).hash()
        values = dict(self.setting.values)
        if name == "scratch":
            identity = {"arm": "scratch", "second": second.hash(), **({"trunk": self.setting.first.hash()}
                                                                      if legacy else {})}
            own = {k: v for k, v in values.items() if k != "first_lr"}  # the scratch arm has no first phase
            return ArmSpec(self.study, name, {**own, **extra}, self.setting.folder, None, {}, second, identity, key,
                           from_first=False)
        if self.study in ONE_PHASE:  # from the first phase's init, as its iteration 0 held it
            run = second.with_values(init_shrink=first.first.model.init_shrink,
                                     init_perturb=first.first.model.init_perturb)
            identity = {"arm": name, "second": run.hash(), **(op_identity or {})}
            return ArmSpec(self.study, name, {**values, **extra}, self.setting.folder, None, op, run, identity, key,
                           from_first=False)
        w = self.w
        identity = {"trunk": first.first.hash(), "arm": name, "second": second.hash(), **(op_identity or {}),
                    **({"bn_stats": "fresh"} if w.warm_bn_stats == "fresh" else {}),
                    **({"start": start} if start is not None and start != self.length else {}),
                    **({"optimizer_state": "carry"} if w.optimizer_state == "carry" else {})}
        return ArmSpec(self.study, name, {**values, **extra}, first.folder, start, op, second, identity, key)


def _four(x: Arms) -> list[ArmSpec]:
    """arms (Ash & Adams): warm, shrink-perturb, reset and scratch."""
    second, (lam, sigma), w = second_phase(x.c), x.lam_sigma(), x.w
    bn = {"bn_stats": w.warm_bn_stats}
    return [x.arm("warm", second, bn),
            x.arm("shrink-perturb", second, bn, {"lam": lam, "sigma": sigma}, op_identity={"lam": lam, "sigma": sigma},
                  first=x.shrunk.get((lam, sigma))),
            x.arm("reset", second, bn, {"reset": w.reset_layers}, op_identity={"reset": w.reset_layers}),
            x.arm("scratch", second, {"bn_stats": "fresh"})]


def _length(x: Arms) -> list[ArmSpec]:
    """length (Berariu Fig. 2): warm from each first-phase length of `--first-steps`."""
    second = second_phase(x.c)
    arms = [x.arm("warm", second, {"first_steps": k, "first_epochs": k / x.first_ipe}, start=k)
            for k in x.setting.saves]
    return arms + [x.arm("scratch", second, {})]


def _reset(x: Arms) -> list[ArmSpec]:
    """reset (Berariu Fig. 6): the layer groups j..G re-initialised, for each j of `--reset-from`."""
    second, w = second_phase(x.c), x.w
    groups = len(layer_groups(_model(x.setting)))
    js = numbers(w.reset_from, "reset_from", int, 1) or list(range(1, groups + 1))
    if max(js) > groups:
        raise UserError(f"--reset-from {w.reset_from}: {x.c.model.model} has layer groups 1..{groups}")
    arms = [x.arm("warm", second, {"reset_from": groups + 1, "groups_reset": 0})]
    arms += [x.arm("reset", second, {"reset_from": j, "groups_reset": groups - j + 1}, {"reset_from": j},
                   op_identity={"reset": f"groups:{j}-{groups}"}) for j in sorted(set(js), reverse=True)]
    return arms + [x.arm("scratch", second, {})]


def _shrink(x: Arms) -> list[ArmSpec]:
    """shrink (Ash & Adams Fig. 5): lambda x sigma of `--shrink` and `--perturb-sigma`."""
    second, w = second_phase(x.c), x.w
    arms = [x.arm("warm", second, {"lam": 1.0, "sigma": 0.0})]
    arms += [x.arm("shrink-perturb", second, {"lam": a, "sigma": s}, {"lam": a, "sigma": s},
                   op_identity={"lam": a, "sigma": s}, first=x.shrunk.get((a, s)))
             for a in numbers(w.shrink, "shrink") for s in numbers(w.perturb_sigma, "perturb_sigma")]
    return arms + [x.arm("scratch", second, {})]


def _lr(x: Arms) -> list[ArmSpec]:
    """lr (Berariu Fig. 7): warm and scratch at each second-phase learning rate."""
    arms = []
    for lr in numbers(x.w.second_lr, "second_lr") or [x.c.train.lr]:
        second = second_phase(x.c, lr)
        arms += [x.arm("warm", second, {"second_lr": lr}), x.arm("scratch", second, {"second_lr": lr})]
    return arms


def _size(x: Arms) -> list[ArmSpec]:
    """size (Berariu Fig. 5): warm and scratch of this setting's width and depth."""
    second = second_phase(x.c)
    return [x.arm("warm", second, {}), x.arm("scratch", second, {})]


def _transition(x: Arms) -> list[ArmSpec]:
    """transition (Berariu Fig. 3): one run moving from the subset to all the data, per gamma."""
    second = second_phase(x.c)
    total = steps.parse(x.w.second_steps, x.ipe, "second_steps")
    arms = [x.arm("transition", second.with_values(deficit=transition(x.c, g, total)), {"gamma": g}, versus=second)
            for g in numbers(x.w.transition_gamma, "transition_gamma")]
    return arms + [x.arm("scratch", second, {})]


def _stages(x: Arms) -> list[ArmSpec]:
    """stages (Berariu Fig. 4): n stages of growing data, then all of it, per n and ratio r; with
    `--stage-shrink`, shrink-perturb at each later stage (and `--shrink-first`: from a shrunk init)."""
    second, w, (lam, sigma) = second_phase(x.c), x.w, x.lam_sigma()
    final = steps.parse(w.second_steps, x.ipe, "second_steps")
    shrink = {"stage_shrink": [lam, sigma]} if w.stage_shrink else {}
    arms = []
    for n in numbers(w.stages, "stages", int, 1):
        for r in numbers(w.stage_ratio, "stage_ratio"):
            ends = stage_ends(second, n, r, x.c.train.steps)
            run = second.with_values(steps=f"{ends[-1] + final}it", deficit=stages(x.c, n, r, ends))
            arms.append(x.arm("stages", run, {"stages": n, "stage_ratio": r, **({"lam": lam, "sigma": sigma}
                                                                               if shrink else {})},
                              {**shrink, "boundaries": ends} if shrink else {}, op_identity=shrink, versus=second,
                              first=x.shrunk.get((lam, sigma))))
    return arms + [x.arm("scratch", second, {})]


BUILDERS: dict[str, Callable[[Arms], list[ArmSpec]]] = {
    "arms": _four, "length": _length, "reset": _reset, "shrink": _shrink, "lr": _lr, "size": _size,
    "transition": _transition, "stages": _stages}
assert set(BUILDERS) == set(STUDIES)


def _with_baselines(arms: list[ArmSpec]) -> list[ArmSpec]:
    """Each arm compared with the scratch arm of its setting and second phase."""
    scratch = {a.baseline: a.branch for a in arms if a.arm == "scratch"}
    return [replace(a, baseline=scratch[a.baseline]) for a in arms]


def _model(setting: Setting):
    c, data = setting.config, trunk.load_data(setting.config)
    return models.build(c.model.model, c.model.width, data.num_classes, 0, blocks=c.model.blocks,
                        in_channels=data.in_channels, image_size=data.image_size)

"""A run's settings: the sections every run has, its trunk's identity (the run hash), and its rules.

A `Config` holds `[data]`, `[model]`, `[train]`, `[pretrain]` and `[runtime]`, and the sections its
studies and executors register with it (`rewind.settings.register`): `[imp]`, `[critical]`,
`[warm]` and `[study]` from `rewind.studies`, `[launch]` from `rewind.launch`. A trunk's identity
(`experiment_dict`, its `hash`) is its data, model, train and pretrain sections: `runtime` (device,
cache folder, progress display) and the registered sections change no weight of it, so an archive
resumes on another machine and any study branches from it.

Importing `rewind.studies` registers every study's and executor's section (the CLI and every study
do); a section that a manifest recorded and whose owner is not loaded here is kept as the plain
table it was (`to_dict` gives it back). The machinery (fields, ranges, TOML, flags) is
`rewind.settings`. Nothing here loads torch: model and dataset names and phases are checked with
`rewind.models.names`, `rewind.data.names` and `rewind.data.phase`. Just over 400 lines: the five
sections' fields and help texts with the rules across them are one idea, worse split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rewind import steps
from rewind.data.names import dataset_identity, holdout_fraction  # noqa: F401  (dataset_identity: also as config.)
from rewind.data.phase import parse_list as parse_phases
from rewind.errors import UserError
from rewind.models import names as model_names
from rewind.settings import (RANGES, Settings, _f, base_type, flag_of, given, read_toml, register,  # noqa: F401
                             to_toml)

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
FIT_ONE_AT_A_TIME = ("runs that stop by fit (--until-train-acc) train one at a time, as each stops at its own step; "
                     "drop --parallel")


def check_fit_alone(parallel: int, until_train_acc: float) -> None:
    """Runs that stop by fit cannot be stacked (--parallel): refused before anything trains."""
    if parallel > 1 and until_train_acc:
        raise UserError(FIT_ONE_AT_A_TIME)


@dataclass(frozen=True)
class DataConfig:
    source: str = _f(
        "cifar10",
        "dataset: 'cifar10', 'cifar100', 'mnist', 'svhn' (torchvision, downloaded into data_dir), 'synthetic' "
        "(CIFAR-10-shaped), 'synthetic:NAME' (a stand-in shaped like NAME, e.g. synthetic:mnist), or a path to an "
        "image-folder tree or .tar.gz with train/<class>/ and test/<class>/ (fed as CIFAR-10 is)",
        flag="--data",
    )
    augment: bool = _f(True, "the dataset's default augmentation: random crop (zero padding 4) and horizontal flip "
                             "for CIFAR and image folders, the crop without flip for SVHN, none for MNIST, the "
                             "crop window and flip drawn per example and epoch from --aug-seed; --no-augment: none")
    train_examples: int = _f(0, "train on a fixed seeded subset of this many examples (0 = all; synthetic: 5000)",
                             valid="count0")
    test_examples: int = _f(0, "evaluate on a fixed seeded subset of this many test examples (0 = all; "
                               "synthetic: 1000)", valid="count0")
    subset_seed: int = _f(0, "seed of the train/test subsets and of the holdout", valid="count0")
    holdout: str = _f("", "hold out this fraction of the training set, e.g. '1/3' (Ash & Adams's code), and score it "
                          "as the test split in place of the official test set; empty: the official test set")
    train_fraction: float = _f(1.0, "train on a seeded fraction of the training set (after --train-examples and "
                                    "--holdout): the run's epochs are passes over that fraction", valid="fraction")
    fraction_seed: int = _f(0, "seed of that fraction", valid="count0")
    normalize: str = _f("dataset", "input normalisation: dataset (its own mean and std) or half (mean and std 0.5 in "
                                   "every channel, as Ash & Adams's code)", choices=("dataset", "half"))


@dataclass(frozen=True)
class ModelConfig:
    model: str = _f("resnet20", "architecture: resnet<6n+2> (CIFAR ResNet: resnet20, resnet56, ...), resnet18, "
                                "vgg11, vgg13, vgg16, vgg19, wrn<d>-<k> (wide ResNet, e.g. wrn16-8), "
                                "lenet<h1>-<h2> (e.g. lenet300-100; OpenLTH's init), mlp<h1>-<h2> (the same network with "
                                "PyTorch's init, e.g. mlp100-100, Ash & Adams's MLP), allcnn")
    width: int | None = _f(None, "channels of the first stage or conv (default: the model's own, resnet<6n+2> 16, "
                                 "resnet18 64 (16 in Ash & Adams), vgg 64, allcnn 96; wrn and lenet take theirs "
                                 "from the name)", valid="count1")
    blocks: int = _f(0, "resnet18: blocks per stage (0 = 2, ResNet-18's)", valid="count0")
    init_shrink: float = _f(1.0, "the run's initial weights are init_shrink * theta + init_perturb * theta', theta' a "
                                 "second init drawn from model_seed: shrink-perturb before training (Ash & Adams's "
                                 "code; warm-start --shrink-first sets it); 1 and 0: the plain init",
                            valid="nonnegative")
    init_perturb: float = _f(0.0, "the sigma of init_shrink's formula", valid="nonnegative")


@dataclass(frozen=True)
class TrainConfig:
    steps: str = _f("160ep", "training length, e.g. '160ep' or '62560it'; an epoch is a pass over the run's own "
                             "training data (a --train-fraction or a warm-start first phase: that subset)", step="one")
    batch_size: int = _f(128, "examples per iteration", valid="count1")
    optimizer: str = _f("sgd", "sgd, adam, adamw (decoupled weight decay) or rmsprop", choices=OPTIMIZERS)
    lr: float = _f(0.1, "peak learning rate", valid="positive")
    momentum: float | None = _f(None, "sgd and rmsprop momentum (default: 0 for rmsprop; for sgd 0.9, the IMP "
                                      "recipe's, but in warm-start studies momentum 0, as both papers' code)",
                                valid="unit")
    nesterov: bool = _f(False, "sgd: Nesterov momentum")
    betas: str = _f("", "adam and adamw: 'beta1,beta2' (default: 0.9,0.999)")
    eps: float | None = _f(None, "adam, adamw and rmsprop: the denominator's epsilon (default: 1e-8)",
                           valid="positive")
    alpha: float | None = _f(None, "rmsprop: smoothing constant of the squared-gradient average (default: 0.99)",
                             valid="unit")
    precision: str = _f("fp32", "arithmetic of the training forward: bf16 = autocast to bfloat16 (weights, optimizer "
                                "and evaluation stay fp32); off by default until shown to match fp32 accuracy",
                        choices=("fp32", "bf16"))
    weight_decay: float = _f(1e-4, "weight decay on all parameters (L2 in the gradient; adamw: decoupled)",
                             valid="nonnegative")
    lr_milestones: str = _f("80ep,120ep", "schedule steps at which the learning rate is multiplied by lr_gamma ('': "
                                          "constant); after a pre-training with --pretrain-schedule offset, main-run "
                                          "iteration t is schedule step P + t (P its length)", step="list")
    lr_gamma: float = _f(0.1, "learning-rate factor at each milestone", valid="positive")
    lr_epoch_decay: float = _f(1.0, "multiply the learning rate by this every epoch, counted from epoch 0 "
                                    "(0.97 in Achille et al.)", valid="positive")
    warmup: str = _f("0it", "linear learning-rate warmup length, in schedule steps (as --lr-milestones)", step="one")
    until_train_acc: float = _f(0.0, "stop at the end of the first pass over the run's training data (an epoch) "
                                     "whose plain accuracy over its batches (metrics.csv split 'fit') is at or above "
                                     "this, --steps the cap (Ash & Adams's code: 0.99; 0 = the whole length). Such "
                                     "runs train one at a time (warm-start does so; the others refuse --parallel)",
                                valid="proportion")
    model_seed: int = _f(0, "seed of the initial weights", valid="count0")
    order_seed: int = _f(0, "seed of the data order", valid="count0")
    aug_seed: int = _f(0, "seed of the data augmentation", valid="count0")
    eval_every: str = _f("1ep", "evaluate on the test set every this many steps (and at 0 and the end)", step="one")
    log_every: str = _f("100it", "log training loss and accuracy every this many steps", step="one")
    save_every: str = _f("10ep", "save every this many steps, besides the dense early checkpoints (iterations 0 to "
                                 "4000) and the end; 0: those only. imp: a level saves at its start k, every "
                                 "save_every on the trunk's grid (so the branches of a sweep resume together) and "
                                 "at its end", step="one")
    save_at: str = _f("", "extra checkpoint steps, comma-separated, e.g. '500,1200it,3ep': main-run iterations "
                          "(after a pre-training, counted from the main run's start)", step="list")
    stats_every: str = _f("50it", "log early-phase statistics (early/) every this many steps, up to stats_until "
                                  "(and at the dense checkpoint steps); 0 turns them off", step="one")
    stats_until: str = _f("4000it", "last step of the online early-phase statistics", step="one")
    fisher_every: str = _f("0it", "log the Fisher information trace (fisher/) every this many steps, its labels "
                                   "sampled from the model's own output (Achille et al.); 0 = never", step="one")
    fisher_examples: int = _f(256, "examples used for each Fisher trace estimate", valid="count1")
    deficit: str = _f("", "deficits over windows of main-run iterations, comma-separated KIND[(NAME=VALUE)]:START-END, "
                          "e.g. 'blur:0ep-40ep,no-weight-decay:0ep-20ep' (critical-period: one KIND[(NAME=VALUE)] "
                          "without a window: the sweep sets the windows); kinds: blur (size: the side in pixels it is "
                          "downsampled to, 8), label-permutation, random-labels, vertical-flip, noise, "
                          "no-augmentation, no-weight-decay, subset (fraction, 0.5)")


# Each pre-training mode's defaults: what `--pretrain MODE` uses for the settings not given.
# Lengths from PROTOCOLS.md section 3 (Frankle, Schwab & Morcos 2020, "The Early Phase of Neural
# Network Training"): "rotation prediction ..., random labels ..., blurred inputs, a data subset;
# for 0 to 40 epochs". The protocol gives one range for every mode, not a length per mode; each
# mode defaults to its end, 40 epochs, the pre-training its expected effects are stated for
# ("longer random-label pre-training hurts"; "blur helps less than rewinding"). Epochs of the
# pre-training data, as `pretrain_steps` counts them. The blur size is the protocols' blur
# (section 4: "downsample to 8x8", the early-phase paper's 4x blur of 32x32 images); section 3
# states no subset fraction: half the training set, as rewind had it.
PRETRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "blur": {"pretrain_steps": "40ep", "pretrain_blur_size": 8},
    "random-labels": {"pretrain_steps": "40ep"},
    "rotation": {"pretrain_steps": "40ep"},
    "subset": {"pretrain_steps": "40ep", "pretrain_subset": 0.5},
}


@dataclass(frozen=True)
class PretrainConfig:
    pretrain: str = _f("none", "pre-training before iteration 0 of the main run; its weights become iteration 0",
                       choices=("none", "blur", "random-labels", "rotation", "subset"))
    pretrain_steps: str = _f("", "length of the pre-training phase, e.g. '10ep', in epochs of the pre-training "
                                 "data (a subset's epochs are shorter), as in OpenLTH; empty: the mode's default "
                                 "(40ep for each mode, Frankle et al. 2020's longest); '0it' with a mode is refused "
                                 "(use --pretrain none)", step="one")
    pretrain_schedule: str = _f("offset", "offset: the pre-training's P iterations take the place of the schedule's "
                                          "first P steps, so the main run continues it from step P (learning rate, "
                                          "data order, augmentation) and ends where it ends, as OpenLTH's "
                                          "train_start_step; restart: the main run trains the whole schedule",
                                choices=("offset", "restart"))
    pretrain_lr: float = _f(0.1, "learning rate of the pre-training phase (constant; same momentum and decay)",
                            valid="positive")
    pretrain_optimizer: str = _f("same", "optimizer of the pre-training phase: same (as the main run's), sgd, adam, "
                                         "adamw or rmsprop (with the main run's betas, eps, ... settings)",
                                 choices=("same", *OPTIMIZERS))
    pretrain_blur_size: int = _f(PRETRAIN_DEFAULTS["blur"]["pretrain_blur_size"],
                                 "blur: antialiased downsampling to this size (pixels), then bilinear upsampling "
                                 "back", valid="count1")
    pretrain_subset: float = _f(PRETRAIN_DEFAULTS["subset"]["pretrain_subset"],
                                "subset: fraction of the training set used", valid="fraction")
    pretrain_seed: int = _f(0, "seed of the random labels, rotations or subset (the data order derives from "
                               "order_seed and aug_seed)", valid="count0")

    def __post_init__(self) -> None:
        # An empty length is the mode's default, stored resolved: the manifest, the run hash and
        # `rewind runs show` hold the length trained (so '40ep' given and '40ep' by default are one run).
        if self.pretrain != "none" and not str(self.pretrain_steps).strip():
            default = PRETRAIN_DEFAULTS.get(self.pretrain, {}).get("pretrain_steps", "")
            object.__setattr__(self, "pretrain_steps", default)

    def describe(self, iterations: int | None = None, defaulted: bool = False) -> str:
        """One line on this pre-training, e.g. 'pretrain blur: 40ep (blur's default; --pretrain-steps sets
        another), blur size 8, constant lr 0.1, schedule offset'; `iterations`: its length in iterations,
        where known; `defaulted`: the length is the mode's default."""
        length = self.pretrain_steps + (f" = {iterations} iterations" if iterations is not None else "")
        if defaulted:
            length += f" ({self.pretrain}'s default; --pretrain-steps sets another)"
        extra = {"blur": f", blur size {self.pretrain_blur_size}",
                 "subset": f", subset {self.pretrain_subset:g} of the training set"}.get(self.pretrain, "")
        optimizer = "" if self.pretrain_optimizer == "same" else f" {self.pretrain_optimizer}"
        return (f"pretrain {self.pretrain}: {length}{extra}, constant{optimizer} lr {self.pretrain_lr:g}, "
                f"schedule {self.pretrain_schedule}")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = _f("auto", "where to train: auto picks CUDA when present", choices=("auto", "cpu", "cuda"))
    data_dir: str = _f("~/.cache/rewind", "where datasets are downloaded and decoded caches are kept")
    progress: str = _f("auto", "progress display: a bar on a terminal, plain lines otherwise",
                       choices=("auto", "bar", "lines", "none"))
    compile: str = _f("auto", "torch.compile the model for training and evaluation: auto = on CUDA only (on CPU it "
                              "costs half a minute of compilation and gains under 5%); graphs = also capture CUDA "
                              "graphs (torch.compile mode reduce-overhead: fewer kernel launches)",
                      choices=("auto", "on", "graphs", "off"))


class Config(Settings):
    """A run's settings: the sections every run has, and those studies and executors register."""

    SECTIONS: ClassVar[dict[str, type]] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                                           "pretrain": PretrainConfig, "runtime": RuntimeConfig}
    TRUNK = ("data", "model", "train", "pretrain")  # what determines a trunk's weights

    def _validate(self) -> None:
        _validate(self)

    def experiment_dict(self) -> dict[str, dict[str, Any]]:
        """The part of the config that determines the trunk (not `runtime`, not any study's settings)."""
        d = {name: dataclasses.asdict(getattr(self, name)) for name in self.TRUNK}
        for key in OBSERVATION_FIELDS:  # when to evaluate, log or save changes no weight
            del d["train"][key]
        d["data"]["source"] = dataset_identity(self.data.source)
        d["model"]["width"] = model_names.resolved_width(self.model.model, self.model.width or 0)
        for key in OPTIMIZER_FIELDS:  # the optimizers' settings as they train, and only those
            del d["train"][key]
        d["train"].update(optimizer_settings(self.train))
        if self.pretrain.pretrain_optimizer != "same":
            kind = self.pretrain.pretrain_optimizer
            d["pretrain"]["pretrain_optimizer_settings"] = optimizer_settings(self.train, kind)
        for section, key, value in LATER_FIELDS:
            if d[section].get(key, value) == value:
                d[section].pop(key, None)  # at its default: archives made before the field keep their hash
        if self.pretrain.pretrain == "none":
            d["pretrain"] = {"pretrain": "none"}  # its other settings then change nothing
        elif self.pretrain.pretrain_schedule == "restart":
            del d["pretrain"]["pretrain_schedule"]  # how pre-trained archives made before the option trained
        return d

    def hash(self) -> str:
        blob = json.dumps(self.experiment_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def with_optimizer(self, kind: str, lr: float | None = None, **values: Any) -> "Config":
        """This config training with optimizer `kind` (and `lr`), the settings only other optimizers
        take left unset (and any other `values`): a later phase's optimizer, say."""
        unset = {"momentum": None, "nesterov": False, "betas": "", "eps": None, "alpha": None}
        foreign = {k: v for k, v in unset.items() if kind not in OPTIMIZER_FIELDS[k]}
        return self.with_values(optimizer=kind, lr=lr or self.train.lr, **foreign, **values)


# Fields added after archives were first made, left out of a trunk's identity while at their
# defaults, so those archives keep their hash.
LATER_FIELDS = (("train", "precision", "fp32"), ("model", "blocks", 0), ("train", "optimizer", "sgd"),
                ("pretrain", "pretrain_optimizer", "same"), ("train", "until_train_acc", 0.0),
                ("data", "holdout", ""), ("data", "train_fraction", 1.0), ("data", "fraction_seed", 0),
                ("data", "normalize", "dataset"), ("model", "init_shrink", 1.0), ("model", "init_perturb", 0.0))
# What is observed and kept, not what is trained: left out of the trunk's identity.
OBSERVATION_FIELDS = ("eval_every", "log_every", "save_every", "save_at", "stats_every", "stats_until",
                      "fisher_every", "fisher_examples")


def all_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every setting of a run -> (section, field)."""
    return Config.fields()


def default(name: str) -> Any:
    """The default of the setting `name`."""
    return Config.fields()[name][1].default


def load(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """A run's settings: the defaults, then the TOML file (if any), then `overrides` (CLI flags win)."""
    return Config.load(path, overrides)


def from_sections(sections: dict[str, Any], overrides: dict[str, Any] | None = None,
                  where: str = "config") -> Config:
    """A run's settings from `{section: {key: value}}` plus flat `overrides`."""
    return Config.from_sections(sections, overrides, where)


def _validate(config: Config) -> None:
    """A run's own rules beyond each field's: lengths above 0, the model's settings, the deficits, the optimizers."""
    t, p = config.train, config.pretrain
    steps.parse_list(t.lr_milestones, 10**9, "lr_milestones", unique=True)  # early; again once epochs are known
    holdout_fraction(config.data.holdout)
    phases = parse_phases(t.deficit, 10**9)  # the syntax, early; windows in epochs are checked once epochs are known
    if twice := next((p for i, p in enumerate(phases) if p in phases[:i]), None):
        raise UserError(f"deficit (--deficit) lists {twice.kind} with the same window twice ({t.deficit!r}); "
                        "give it once")
    if p.pretrain != "none" and steps.parse(p.pretrain_steps, 1, "pretrain_steps") == 0:
        mode_default = PRETRAIN_DEFAULTS[p.pretrain]["pretrain_steps"]
        raise UserError(f"--pretrain {p.pretrain} needs a length above 0, got --pretrain-steps {p.pretrain_steps}: "
                        f"leave it out for the mode's default ({mode_default}), or give one, e.g. 10ep")
    check_length(t.steps, "steps")
    model_names.check(config.model.model, config.model.width or 0, config.model.blocks)
    _check_optimizers(config)


def check_length(text: str, name: str) -> None:
    """UserError unless the step `text` (the setting `name`) is a training length above 0."""
    if steps.parse(text, 1, name) == 0:
        raise UserError(f"{name} must be above 0 (a training length), got {text!r} (--{name.replace('_', '-')}), "
                        "e.g. '160ep'")


def flag(name: str) -> str:
    """The command-line flag of a setting (`--data` for `source`, else `--name-with-dashes`)."""
    found = Config.fields().get(name)
    return flag_of(found[1]) if found else "--" + name.replace("_", "-")


def option(name: str) -> str:
    """How the user writes a setting: `name (--flag)` (the TOML key, then the flag)."""
    return f"{name} ({flag(name)})"


# Optimizer settings -> the optimizers that take them.
OPTIMIZER_FIELDS = {"momentum": ("sgd", "rmsprop"), "nesterov": ("sgd",), "betas": ("adam", "adamw"),
                    "eps": ("adam", "adamw", "rmsprop"), "alpha": ("rmsprop",)}


def optimizer_settings(t: TrainConfig, kind: str | None = None) -> dict[str, Any]:
    """The hyperparameters optimizer `kind` (default: the main run's) trains with, as torch names
    them, with every unset one at its default (the recipe's SGD momentum 0.9; torch's otherwise)."""
    kind = kind or t.optimizer
    eps = 1e-8 if t.eps is None else t.eps
    if kind == "sgd":
        return {"momentum": 0.9 if t.momentum is None else t.momentum, "nesterov": t.nesterov}
    if kind in ("adam", "adamw"):
        return {"betas": betas(t.betas), "eps": eps}
    return {"momentum": 0.0 if t.momentum is None else t.momentum, "alpha": 0.99 if t.alpha is None else t.alpha,
            "eps": eps}


def betas(text: str) -> list[float]:
    """'0.9,0.999' -> [0.9, 0.999]; empty text gives Adam's defaults."""
    if not str(text).strip():
        return [0.9, 0.999]
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(0 <= v < 1 for v in values):
        raise UserError(f"betas must be two numbers in [0, 1), written 'beta1,beta2' (e.g. '0.9,0.999'); got {text!r}")
    return values


def _check_optimizers(config: Config) -> None:
    """One rule for every optimizer a command trains with, whether it comes from `--optimizer`,
    `--pretrain-optimizer` or a section's own (a section with `trains_with(self, config)` names those
    the run trains with in place of `--optimizer`: warm-start's `--optimizers` and
    `--second-optimizer`): each optimizer setting given is one at least one of them takes; betas and
    nesterov make sense."""
    t = config.train
    named = [s.trains_with(config) for s in config.sections() if hasattr(s, "trains_with")]
    used = set().union(*named) if named else {t.optimizer}
    if config.pretrain.pretrain != "none" and config.pretrain.pretrain_optimizer != "same":
        used.add(config.pretrain.pretrain_optimizer)
    asked = {"momentum": t.momentum is not None, "nesterov": t.nesterov, "betas": bool(t.betas.strip()),
             "eps": t.eps is not None, "alpha": t.alpha is not None}
    for name, takers in OPTIMIZER_FIELDS.items():
        if asked[name] and not used & set(takers):
            raise UserError(f"{name} is a setting of {' and '.join(takers)}, and this run uses "
                            f"{', '.join(sorted(used))}; drop --{name}, or choose an optimizer that takes it "
                            f"(e.g. --optimizer {takers[0]})")
    betas(t.betas)
    if t.nesterov and optimizer_settings(t, "sgd")["momentum"] == 0:
        raise UserError("nesterov needs a momentum above 0; drop --nesterov or set --momentum")


def from_record(sections: dict[str, Any], overrides: dict[str, Any] | None = None,
                where: str = "manifest") -> Config:
    """A Config from the config a manifest records, also one written by an earlier rewind.

    Settings renamed since are read under their new names (a section's own `migrate`), a width
    recorded as 0 (the model's own) as unset, and a pre-trained archive that predates
    `pretrain_schedule` is read as restart, the way it trained.
    """
    sections = {name: dict(table) if isinstance(table, dict) else table for name, table in sections.items()}
    pre, model = sections.get("pretrain", {}), sections.get("model", {})
    if model.get("width") == 0:
        model["width"] = None  # written 0 for the model's own width before the default was unset
    if pre.get("pretrain", "none") != "none":
        pre.setdefault("pretrain_schedule", "restart")
    for name, cls in Config.SECTIONS.items():
        if hasattr(cls, "migrate") and isinstance(sections.get(name), dict):
            sections[name] = cls.migrate(sections[name])
    return Config.from_sections(sections, overrides, where, keep_unknown=True)


def replicate(config: Config, r: int) -> Config:
    """Replicate r: every seed shifted by r (replicate 0 is the config itself)."""
    t = config.train
    return config.with_values(model_seed=t.model_seed + r, order_seed=t.order_seed + r, aug_seed=t.aug_seed + r)



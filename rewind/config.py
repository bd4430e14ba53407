"""Frozen hyperparameter dataclasses: the one source for TOML configs, CLI flags, manifests and run hashes.

A config has sections (`[data]`, `[model]`, `[train]`, `[runtime]`). Field names are unique
across sections so that every field is also a CLI flag `--field-name`. `runtime` holds
settings that do not change results (device, cache folder, progress display); it is left
out of the run hash so an archive can be resumed on another machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rewind import models, steps
from rewind.errors import UserError


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


# Valid ranges of numeric fields: name -> (test, how the message says it).
RANGES = {
    "positive": (lambda v: v > 0, "> 0"),
    "nonnegative": (lambda v: v >= 0, ">= 0"),
    "count0": (lambda v: v >= 0, "a whole number >= 0"),
    "count1": (lambda v: v >= 1, "a whole number >= 1"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "open_unit": (lambda v: 0 < v < 1, "in (0, 1)"),
    "unit": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "proportion": (lambda v: 0 <= v <= 1, "in [0, 1]"),
}


def _f(default: Any, help: str, flag: str | None = None, choices: tuple[str, ...] | None = None,
       valid: str | None = None) -> Any:
    """A config field: its default, its --help text, its flag if not --field-name, its choices (strings)
    or valid range (numbers, a key of RANGES: every int and float field has one)."""
    return field(default=default, metadata={"help": help, "flag": flag, "choices": choices, "valid": valid})


def _check_value(f: dataclasses.Field, value: Any) -> None:
    """UserError unless `value` is one of the field's choices or in its valid range."""
    choices, valid = f.metadata.get("choices"), f.metadata.get("valid")
    if isinstance(value, float):
        finite(f.name, value)
    if choices and value not in choices:
        raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}")
    if valid and value is not None:
        test, text = RANGES[valid]
        if not test(value):
            unset = "; leave it out for its default" if f.default is None else ""
            raise UserError(f"{f.name} must be {text}, got {value!r} (--{f.name.replace('_', '-')}){unset}")


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
                             "for CIFAR and image folders, the crop without flip for SVHN, none for MNIST; "
                             "false = none")
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
                             "training data (a --train-fraction or a warm-start first phase: that subset)")
    batch_size: int = _f(128, "examples per iteration", valid="count1")
    optimizer: str = _f("sgd", "sgd, adam, adamw (decoupled weight decay) or rmsprop", choices=OPTIMIZERS)
    lr: float = _f(0.1, "peak learning rate", valid="positive")
    momentum: float | None = _f(None, "sgd and rmsprop momentum (default: 0.9 for sgd, the recipe's; 0 for rmsprop)",
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
    lr_milestones: str = _f("80ep,120ep", "steps at which the learning rate is multiplied by lr_gamma")
    lr_gamma: float = _f(0.1, "learning-rate factor at each milestone", valid="positive")
    lr_epoch_decay: float = _f(1.0, "multiply the learning rate by this every epoch, counted from epoch 0 "
                                    "(0.97 in Achille et al.)", valid="positive")
    warmup: str = _f("0it", "linear learning-rate warmup length")
    until_train_acc: float = _f(0.0, "stop at the end of the first pass over the run's training data (an epoch) "
                                     "whose training accuracy, over that pass, is at or above this, --steps being "
                                     "the cap (Ash & Adams's code: 0.99); 0 = train the whole length",
                                valid="proportion")
    model_seed: int = _f(0, "seed of the initial weights", valid="count0")
    order_seed: int = _f(0, "seed of the data order", valid="count0")
    aug_seed: int = _f(0, "seed of the data augmentation", valid="count0")
    eval_every: str = _f("1ep", "evaluate on the test set every this many steps (and at 0 and the end)")
    log_every: str = _f("100it", "log training loss and accuracy every this many steps")
    save_every: str = _f("10ep", "after the dense early checkpoints, save every this many steps")
    save_at: str = _f("", "extra checkpoint steps, comma-separated, e.g. '500,1200it,3ep'")
    stats_every: str = _f("50it", "log early-phase statistics (early/) every this many steps, up to stats_until "
                                  "(and at the dense checkpoint steps); 0 turns them off")
    stats_until: str = _f("4000it", "last step of the online early-phase statistics")
    fisher_every: str = _f("0it", "log the Fisher information trace (fisher/) every this many steps; 0 = never")
    fisher_examples: int = _f(256, "examples used for each Fisher trace estimate", valid="count1")
    deficit: str = _f("", "deficits over iteration windows, comma-separated KIND[(NAME=VALUE)]:START-END, e.g. "
                          "'blur:0ep-40ep,no-weight-decay:0ep-20ep'; kinds: blur, label-permutation, random-labels, "
                          "vertical-flip, noise, no-augmentation, no-weight-decay, subset")


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
                                 "(40ep for each mode, Frankle et al. 2020's longest)")
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
                                 "blur: downsample to this size, then upsample back", valid="count1")
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
class ImpConfig:
    levels: int = _f(20, "IMP rounds; level L trains at density (1 - prune_fraction)^L", valid="count0")
    rewind_iter: str = _f("0it", "rewind surviving weights to this trunk iteration, e.g. 500 or '2ep'; several, "
                                 "comma-separated ('0,100,500'), sweep the rewind point")
    prune_fraction: float = _f(0.2, "fraction of the remaining weights removed per level", valid="open_unit")
    layerwise: bool = _f(False, "prune each layer by the same fraction instead of by global magnitude")
    dense_layers: str = _f("", "comma-separated weights (or prefixes) never pruned, e.g. 'conv.weight,fc.weight'")
    rewind_optimizer: bool = _f(False, "restore the trunk's optimizer state at the rewind point (momentum, Adam's "
                                                 "moments; zero at pruned weights) instead of a fresh optimizer")
    control: str = _f("none", "control with the same masks: random-reinit or random-prune (same per-layer density)",
                      choices=("none", "random-reinit", "random-prune"))
    perturb: str = _f("none", "perturb the rewind-point weights under the plain branch's masks",
                      choices=("none", "sign-keep", "shuffle", "shuffle-keep-signs", "noise", "reinit"))
    perturb_scale: float = _f(1.0, "noise perturbation: standard deviation in units of each layer's init std",
                              valid="nonnegative")
    control_seed: int = _f(0, "seed of the control's or perturbation's random weights or masks", valid="count0")


@dataclass(frozen=True)
class CriticalConfig:
    switch_at: str = _f("0,20,40,60,80ep", "critical period: the points t swept, where each arm switches: the "
                                           "deficit ends at t (deficit-then-normal) or begins at t (normal-then-deficit)")
    direction: str = _f("deficit-then-normal", "critical period: what the network receives, in order: the deficit "
                                               "until t, then normal training (Achille et al.), or normal training, "
                                               "then the deficit from t. For no-weight-decay and no-augmentation the "
                                               "deficit is the regulariser off: deficit-then-normal is 'off, then on'",
                        choices=("deficit-then-normal", "normal-then-deficit"))
    after: str = _f("160ep", "critical period: training after each switch point or window (Achille et al.); "
                             "not used with --total-steps")
    total_steps: str = _f("", "critical period: end every arm at this iteration instead, so that all train the "
                              "same total (Golatkar et al.), e.g. '160ep'; empty: --after")
    window: str = _f("", "critical period: deficit window length; with it, --starts are swept instead of --switch-at")
    starts: str = _f("0,20,40,60,80ep", "critical period: window start points (with --window)")


STUDIES = ("arms", "length", "reset", "shrink", "lr", "size", "transition", "stages")


@dataclass(frozen=True)
class WarmConfig:
    study: str = _f("arms", "warm start: the study (arms: warm, shrink-perturb, reset, scratch; length: the first phase's "
                            "length, --first-steps; reset: the top layer groups reset, --reset-from; shrink: lambda x "
                            "sigma, --shrink, --perturb-sigma; lr: --second-lr x --first-lr; size: --widths x --depths; "
                            "transition: one phase moving from the subset to the full set, --transition-gamma; "
                            "stages: n stages of growing data, --stages x --stage-ratio)",
                    choices=STUDIES)
    warm_fraction: float = _f(0.5, "warm start: fraction of the training set used in the first phase; --steps "
                                   "(the first phase's length) counts epochs of that fraction", valid="fraction")
    warm_seed: int = _f(0, "warm start: seed of that subset", valid="count0")
    first_steps: str = _f("", "length study: first-phase lengths the second phase branches from, e.g. "
                              "'0,5,10,25,50,100,350ep' (epochs of the first phase's subset; a bare number takes the "
                              "unit written last), checkpoints of one first phase of --steps; empty: --steps")
    optimizers: str = _f("", "warm start, any study: compare optimizers, one first phase each, written "
                             "KIND[:LR[:MOMENTUM]], e.g. 'sgd:0.1:0,sgd:0.1:0.9,rmsprop:0.001' (LR default --lr; "
                             "MOMENTUM for sgd and rmsprop, default --momentum, else 0); empty: --optimizer")
    first_lr: str = _f("", "lr study: first-phase learning rates, comma-separated (one first phase each; "
                           "empty: --lr)")
    second_steps: str = _f("160ep", "warm start: length of the second phase, on all the data")
    second_optimizer: str = _f("same", "warm start: optimizer of the second phase (same = the first phase's)",
                               choices=("same", *OPTIMIZERS))
    second_lr: str = _f("", "warm start: peak learning rate of the second phase (empty: --lr); the lr study sweeps "
                            "a comma-separated list")
    optimizer_state: str = _f("reset", "warm start: the second phase's optimizer state: reset (a fresh optimizer, the "
                                       "papers' default) or carry (the first phase's, at the checkpoint branched "
                                       "from; same optimizer in both phases)", choices=("reset", "carry"))
    shrink: str = _f("0.6", "shrink-perturb: lambda in theta <- lambda * theta + sigma * theta_fresh; the shrink "
                            "study sweeps a comma-separated list")
    perturb_sigma: str = _f("0.01", "shrink-perturb: sigma; the shrink study sweeps a comma-separated list")
    reset_layers: str = _f("top-stage", "reset arm: layers re-initialised before phase two, comma-separated "
                                        "(e.g. 'blocks.8,fc'); top-stage = the last stage's blocks and fc")
    reset_from: str = _f("", "reset study: for each j listed, reset layer groups j..G (ResNet-18: 1 = stem, 2-5 = "
                             "the stages, 6 = fc; CIFAR ResNets: 1 = stem, 2-4, 5 = fc); empty: every j")
    widths: str = _f("", "size study: model widths (first-stage channels), comma-separated; empty: --width")
    depths: str = _f("", "size study: resnet18 blocks per stage (Berariu's d), comma-separated; empty: --blocks")
    transition_gamma: str = _f("0.9,0.97,0.99,0.999", "transition study: the gammas swept; each example of batch n "
                                                      "comes from the full set with probability 1 - gamma^(50 n / N) "
                                                      "(N the run's steps, --second-steps), else from the subset; p "
                                                      "ends at 1 - gamma^50 (0.995, 0.78, 0.39, 0.05)")
    stages: str = _f("1,2,4", "stages study: the numbers of stages n swept; stage i trains --steps in epochs of its "
                              "own data D_i (so stage lengths are proportional to |D_i|, Berariu A.3), then "
                              "--second-steps on all of it")
    stage_ratio: str = _f("0,0.5", "stages study: the ratios r swept: the share of the data drawn uniformly over "
                                   "all classes, spread over the stages; the rest arrives class group by group")
    stage_shrink: bool = _f(False, "stages study: shrink-perturb (the first --shrink and --perturb-sigma) at the "
                                   "start of every stage after the first and of the final one")
    shrink_first: bool = _f(False, "shrink-perturb before the first phase too, as Ash & Adams's code does at every "
                                   "round: each shrink-perturb arm (and --stage-shrink's run) gets a first phase of "
                                   "its own from lam * theta0 + sigma * theta0' (the paper describes it between "
                                   "phases only, the default)")
    last_evals: int = _f(10, "the papers' metric: mean test accuracy over each arm's last K evaluations (Berariu: "
                             "the last 100 epochs, i.e. 100 with --eval-every 1ep)", valid="count1")
    warm_bn_stats: str = _f("fresh", "BatchNorm running statistics the arms from the first phase's weights start "
                                     "with: fresh (a fresh network's, as Ash & Adams's code, which copies only the "
                                     "parameters into a new network) or trained (the first phase's)",
                            choices=("fresh", "trained"))


@dataclass(frozen=True)
class StudyConfig:
    replicates: int = _f(1, "independent runs with the model, order and augmentation seeds shifted by 0..R-1; results "
                              "report mean and spread", valid="count1")
    parallel: int = _f(1, "train up to this many runs together on one device (replica trainer)", valid="count1")


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


@dataclass(frozen=True)
class LaunchConfig:
    executor: str = _f("inline", "where the study's runs train: inline (in this process), local (one process per "
                                 "run on this machine, one per GPU where there are several) or slurm (a job per "
                                 "run through submitit)", choices=("inline", "local", "slurm"))
    detach: bool = _f(False, "local: start the runs in the background and return at once (slurm always returns "
                             "once the jobs are submitted)")
    local_jobs: int = _f(0, "local: runs at once (0 = one per GPU, or 1 without one)", valid="count0")
    partition: str = _f("", "slurm: the partition (empty = the cluster's default)")
    time_limit: int = _f(240, "slurm: minutes per time slot of a job: 1 to 2 minutes before its end the job "
                              "requeues itself and resumes from its last checkpoint in a new slot, as often as "
                              "it needs while each slot saves a checkpoint (one that saves none fails, saying so); "
                              "at least 3", valid="count1")
    gpus_per_job: int | None = _f(None, "slurm: GPUs per job (default: none with --device cpu or where the "
                                        "partition's nodes have none, else 1)", valid="count0")
    cpus_per_job: int | None = _f(None, "slurm: CPUs per job (default: 8, or all of the partition's largest node "
                                        "if fewer)", valid="count1")
    mem_gb: int | None = _f(None, "slurm: memory per job in GB (default: 32, or all of the partition's largest "
                                  "node if less)", valid="count1")
    array_parallelism: int = _f(64, "slurm: jobs of one array running at once", valid="count1")
    sbatch: str = _f("", "slurm: extra sbatch parameters, 'KEY=VALUE,KEY=VALUE' (e.g. 'account=abc,qos=high')")

    def __post_init__(self) -> None:  # checked here too: the deep-linear studies have this section
        for f in fields(self):
            _check_value(f, getattr(self, f.name))
        sbatch_options(self.sbatch)


def sbatch_options(text: str) -> dict[str, str]:
    """'account=abc,qos=high' -> {'account': 'abc', 'qos': 'high'}."""
    out = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"bad sbatch parameter {part!r}: write KEY=VALUE pairs separated by commas, "
                            "e.g. 'account=abc,qos=high'")
        if (key := key.strip().replace("_", "-")) in out:
            raise UserError(f"sbatch parameter {key} is given twice ({text!r}); give it once")
        out[key] = value.strip()
    return out


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    pretrain: PretrainConfig = PretrainConfig()
    imp: ImpConfig = ImpConfig()
    critical: CriticalConfig = CriticalConfig()
    warm: WarmConfig = WarmConfig()
    study: StudyConfig = StudyConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    launch: LaunchConfig = LaunchConfig()

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def experiment_dict(self) -> dict[str, dict[str, Any]]:
        """The part of the config that determines the trunk (not `runtime`, not the IMP branch settings)."""
        d = self.to_dict()
        del d["runtime"], d["launch"], d["imp"], d["critical"], d["warm"], d["study"]
        for key in OBSERVATION_FIELDS:  # when to evaluate, log or save changes no weight
            del d["train"][key]
        d["data"]["source"] = dataset_identity(self.data.source)
        d["model"]["width"] = models.resolved_width(self.model.model, self.model.width or 0)
        for key in OPTIMIZER_FIELDS:  # the optimizers' settings as they train, and only those
            del d["train"][key]
        d["train"].update(optimizer_settings(self.train))
        if self.pretrain.pretrain_optimizer != "same":
            kind = self.pretrain.pretrain_optimizer
            d["pretrain"]["pretrain_optimizer_settings"] = optimizer_settings(self.train, kind)
        for section, key, default in LATER_FIELDS:
            if d[section].get(key, default) == default:
                d[section].pop(key, None)  # at its default: archives made before the field keep their hash
        if self.pretrain.pretrain == "none":
            d["pretrain"] = {"pretrain": "none"}  # its other settings then change nothing
        elif self.pretrain.pretrain_schedule == "restart":
            del d["pretrain"]["pretrain_schedule"]  # how pre-trained archives made before the option trained
        return d

    def hash(self) -> str:
        blob = json.dumps(self.experiment_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def plain(self) -> "Config":
        """The same IMP settings without control or perturbation: the branch whose masks those reuse."""
        return self.with_values(control="none", perturb="none", control_seed=0, perturb_scale=1.0)

    def branch_identity(self, k: int) -> dict[str, Any]:
        """What identifies an IMP branch of a trunk: the IMP settings that change its results, and the
        rewind point in iterations (so '50' and '50it' are one branch)."""
        imp = dataclasses.asdict(self.imp)
        del imp["levels"]  # more levels extend a branch
        imp["rewind_iter"] = k
        if imp["control"] == "none" and imp["perturb"] == "none":
            del imp["control_seed"]
        if imp["perturb"] != "noise":
            del imp["perturb_scale"]
        return {"trunk": self.hash(), "imp": imp}

    def with_optimizer(self, kind: str, lr: float | None = None) -> "Config":
        """This config training with optimizer `kind` (and `lr`), the settings only other optimizers
        take left unset: a later phase's optimizer, or one first phase of `--optimizers` (which then
        lists no others)."""
        unset = {"momentum": None, "nesterov": False, "betas": "", "eps": None, "alpha": None}
        values = {k: v for k, v in unset.items() if kind not in OPTIMIZER_FIELDS[k]}
        return self.with_values(optimizer=kind, lr=lr or self.train.lr, second_optimizer="same", optimizers="",
                                **values)

    def with_values(self, **values: Any) -> "Config":
        """A copy with fields replaced by name (`lr=0.05`), whatever section they live in."""
        return from_sections(self.to_dict(), overrides=values)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                             "pretrain": PretrainConfig, "imp": ImpConfig, "critical": CriticalConfig,
                             "warm": WarmConfig, "study": StudyConfig, "runtime": RuntimeConfig,
                             "launch": LaunchConfig}
STEP_FIELDS = ("steps", "warmup", "eval_every", "log_every", "save_every", "pretrain_steps", "after",
               "total_steps", "window", "stats_every", "stats_until", "fisher_every", "second_steps")
STEP_LIST_FIELDS = ("lr_milestones", "save_at", "rewind_iter")
# Fields added after archives were first made, left out of a trunk's identity while at their
# defaults, so those archives keep their hash.
LATER_FIELDS = (("train", "precision", "fp32"), ("model", "blocks", 0), ("train", "optimizer", "sgd"),
                ("pretrain", "pretrain_optimizer", "same"), ("train", "until_train_acc", 0.0),
                ("data", "holdout", ""), ("data", "train_fraction", 1.0), ("data", "fraction_seed", 0),
                ("data", "normalize", "dataset"), ("model", "init_shrink", 1.0), ("model", "init_perturb", 0.0))
# What is observed and kept, not what is trained: left out of the trunk's identity.
OBSERVATION_FIELDS = ("eval_every", "log_every", "save_every", "save_at", "stats_every", "stats_until",
                      "fisher_every", "fisher_examples")


def all_fields(schema: dict[str, type] | None = None) -> dict[str, tuple[str, dataclasses.Field]]:
    """Every field name -> (section, field), of `schema` (section -> dataclass; default: `Config`'s)."""
    return {f.name: (section, f) for section, cls in (schema or SECTIONS).items() for f in fields(cls)}


def dataset_identity(source: str) -> str:
    """The dataset as it enters the run hash: a path counts by its name and size, not its location,
    so a moved copy still matches and another dataset of the same name does not. A named dataset
    (cifar10, mnist, synthetic:mnist, ...) counts by its name."""
    from rewind.data.sources import is_named  # late import: keep config light

    if is_named(source):
        return source
    path = Path(source).expanduser()
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return f"folder:{name}:{_size(path.resolve())}"


@functools.lru_cache(maxsize=None)
def _size(path: Path) -> int:
    """Bytes under `path`; cached, since a tree of 60,000 images takes a while to walk and the
    hash is asked for several times per command."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0  # missing: loading it says so


def _validate(config: Config) -> None:
    t = config.train
    flat = {f.name: getattr(getattr(config, s), f.name) for s, cls in SECTIONS.items() for f in fields(cls)}
    for name in STEP_FIELDS:
        steps.check(flat[name], name)
    for name in STEP_LIST_FIELDS:
        steps.check_list(flat[name], name)
    steps.parse_list(t.lr_milestones, 10**9, "lr_milestones", unique=True)  # early; again once epochs are known
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            _check_value(f, getattr(getattr(config, section), f.name))
    for name in ("switch_at", "starts"):
        parts = [p.strip() for p in getattr(config.critical, name).split(",") if p.strip()]
        if not parts:
            raise UserError(f"{name} must list at least one step, e.g. '0,20,40ep'")
        for p in parts[:-1]:
            if not p.isdigit():
                steps.check(p, name)
        steps.check(parts[-1], name)
    _check_warm(config.warm)
    from rewind.data.sources import holdout_fraction

    holdout_fraction(config.data.holdout)
    if not steps.parse_list(config.imp.rewind_iter, 1):
        raise UserError("rewind_iter must name at least one iteration, e.g. '500' or '0,100,500'")
    if config.imp.control != "none" and config.imp.perturb != "none":
        raise UserError(f"--control {config.imp.control} and --perturb {config.imp.perturb} exclude each other: "
                        "a control replaces the rewind-point weights or masks that a perturbation changes; "
                        "run them as two branches")
    from rewind.data.phases import parse_list

    phases = parse_list(t.deficit, 10**9)  # the syntax, early; windows in epochs are checked once epochs are known
    if twice := next((p for i, p in enumerate(phases) if p in phases[:i]), None):
        raise UserError(f"deficit (--deficit) lists {twice.kind} with the same window twice ({t.deficit!r}); "
                        "give it once")
    p = config.pretrain
    if p.pretrain != "none" and steps.parse(p.pretrain_steps, 1, "pretrain_steps") == 0:
        default = PRETRAIN_DEFAULTS[p.pretrain]["pretrain_steps"]
        raise UserError(f"--pretrain {p.pretrain} needs a length above 0, got --pretrain-steps {p.pretrain_steps}: "
                        f"leave it out for the mode's default ({default}), or give one, e.g. 10ep")
    # The one-phase plasticity studies keep the init as their first phase: a trunk of 0 steps.
    one_phase = config.warm.study in ("transition", "stages")
    for name in ("steps", "second_steps"):
        if steps.parse(flat[name], 1, name) == 0 and not (name == "steps" and one_phase):
            raise UserError(f"{name} must be above 0 (a training length), got {flat[name]!r} "
                            f"(--{name.replace('_', '-')}), e.g. '160ep'")
    models.check(config.model.model, config.model.width or 0, config.model.blocks)
    _check_optimizers(config)


def flag(name: str) -> str:
    """The command-line flag of a setting (`--data` for `source`, else `--name-with-dashes`)."""
    found = all_fields().get(name)
    return (found[1].metadata.get("flag") if found else None) or "--" + name.replace("_", "-")


def option(name: str) -> str:
    """How the user writes a setting: `name (--flag)` (the TOML key, then the flag)."""
    return f"{name} ({flag(name)})"


def finite(name: str, value: float, where: str = "") -> None:
    """UserError unless `value` is a finite number: every float setting passes here (TOML and click
    both read inf and nan)."""
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r} ({flag(name)}" + (f", in {where})" if where
                                                                                          else ")"))


def numbers(text: str, what: str, kind: type = float, at_least: float = 0.0, strict: bool = False) -> list:
    """'0.3,0.6,1.0' -> [0.3, 0.6, 1.0] (ints for kind=int), each a finite number at least `at_least`
    (above it if `strict`), none twice; '' gives []."""
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < at_least or (strict and value == at_least):
            unit = "whole numbers" if kind is int else "numbers"
            raise UserError(f"{what} must be comma-separated {unit} {'>' if strict else '>='} {at_least:g}, e.g. "
                            f"'{'1,2' if kind is int else '0.3,0.6'}'; got {text!r}"
                            + (f" ({flag(what)})" if what in all_fields() else ""))
        if value in out:
            raise UserError(f"{option(what)} lists {part} twice ({text!r}): each value is one run; give it once")
        out.append(value)
    return out


def optimizer_list(text: str) -> list[tuple[str, float | None, float | None]]:
    """'sgd:0.1:0.9,adam' -> [('sgd', 0.1, 0.9), ('adam', None, None)]: KIND[:LR[:MOMENTUM]], the
    momentum for the optimizers that take one (sgd, rmsprop)."""
    out = []
    form = "write KIND[:LR[:MOMENTUM]], e.g. 'sgd:0.1:0,sgd:0.1:0.9,rmsprop:0.001'"
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        kind, lr, momentum, *rest = [*part.split(":"), "", ""]
        if kind not in OPTIMIZERS or any(rest):
            raise UserError(f"optimizers: {part!r} is not KIND[:LR[:MOMENTUM]] with KIND one of "
                            f"{', '.join(OPTIMIZERS)}; {form}")
        if momentum and kind not in OPTIMIZER_FIELDS["momentum"]:
            raise UserError(f"optimizers: {part!r}: {kind} takes no momentum (sgd and rmsprop do); {form}")
        m = numbers(momentum, "optimizers' momenta")[0] if momentum else None
        if m is not None and m >= 1:
            raise UserError(f"optimizers: {part!r}: a momentum must be in [0, 1); {form}")
        out.append((kind, numbers(lr, "optimizers' learning rates", strict=True)[0] if lr else None, m))
    return out


def _check_warm(w: "WarmConfig") -> None:
    """The warm-start lists: numbers in range, and one value each where only one makes sense."""
    for name in ("shrink", "perturb_sigma"):
        if not numbers(getattr(w, name), name):
            raise UserError(f"{option(name)} needs a value, e.g. '0.6'")
    numbers(w.second_lr, "second_lr", strict=True)
    numbers(w.first_lr, "first_lr", strict=True)
    numbers(w.reset_from, "reset_from", int, 1)
    entries = optimizer_list(w.optimizers)
    if twice := next((e for i, e in enumerate(entries) if e in entries[:i]), None):
        raise UserError(f"{option('optimizers')} lists {':'.join(str(v) for v in twice if v is not None)} twice "
                        f"({w.optimizers!r}): each entry is one first phase; give it once")
    for name in ("stages", "stage_ratio", "transition_gamma"):  # the values their studies sweep
        if not str(getattr(w, name)).strip():
            raise UserError(f"{option(name)} needs at least one value, e.g. "
                            f"'{ {'stages': '1,2,4', 'stage_ratio': '0,0.5'}.get(name, '0.9,0.99')}'")
    numbers(w.stages, "stages", int, 1)
    if any(r > 1 for r in numbers(w.stage_ratio, "stage_ratio")):
        raise UserError(f"{option('stage_ratio')} must be in [0, 1]; got {w.stage_ratio!r}")
    if any(g > 1 for g in numbers(w.transition_gamma, "transition_gamma")):
        raise UserError(f"{option('transition_gamma')} must be in [0, 1]; got {w.transition_gamma!r}")
    numbers(w.widths, "widths", int, 1)
    numbers(w.depths, "depths", int, 1)
    parts = [p.strip() for p in w.first_steps.split(",") if p.strip()]
    for p in parts[:-1]:
        if not p.isdigit():
            steps.check(p, "first_steps")
    if parts:
        steps.check(parts[-1], "first_steps")


# Settings only some studies use, by the study (or mode) that uses them: given to another, they would
# change nothing, so `check_used` refuses them. (A setting is given when it is not at its default.)
WARM_USES = {
    "first_steps": ("length",), "first_lr": ("lr",), "widths": ("size",), "depths": ("size",),
    "transition_gamma": ("transition",), "stages": ("stages",), "stage_ratio": ("stages",),
    "stage_shrink": ("stages",), "reset_from": ("reset",), "reset_layers": ("arms",),
    "shrink": ("arms", "shrink", "stages+shrink"), "perturb_sigma": ("arms", "shrink", "stages+shrink"),
    "warm_fraction": tuple(s for s in STUDIES if s != "stages"),
    "warm_bn_stats": (*(s for s in STUDIES if s not in ("transition", "stages")), "stages+shrink"),
    "optimizer_state": tuple(s for s in STUDIES if s != "transition"),
}
# Lists of which a study other than the one named takes a single value.
WARM_SWEEPS = {"second_lr": "lr", "shrink": "shrink", "perturb_sigma": "shrink"}


def _warm_mode(study: str, stage_shrink: bool) -> str:
    return study + ("+shrink" if study == "stages" and stage_shrink else "")


def settle_recipe(config: "Config", path: str | Path | None, flags: set[str]) -> "Config":
    """A recipe file serves every warm-start study: the settings it gives for its own study (its
    `study`, arms by default) that the study chosen on the command line does not use go back to
    their defaults, so they are neither refused nor recorded. A file setting its own study does not
    use, and any such option on the command line, stay for `check_used` to refuse."""
    table = _read(path).get("warm", {})
    table = table if isinstance(table, dict) else {}
    own = _warm_mode(str(table.get("study", _default("study"))), bool(table.get("stage_shrink", False)))
    chosen = _warm_mode(config.warm.study, config.warm.stage_shrink)
    back = {name: _default(name) for name, users in WARM_USES.items()
            if name in table and name not in flags and own in users and chosen not in users}
    return config.with_values(**back) if back else config


def check_used(config: "Config", command: str) -> None:
    """UserError for a setting the chosen study (`command`: warm-start, critical-period or imp) does not
    use, naming the study or mode that does."""
    def given(section: str, name: str) -> bool:
        return getattr(getattr(config, section), name) != _default(name)

    if command == "warm-start":
        w = config.warm
        mode = _warm_mode(w.study, w.stage_shrink)
        for name, users in WARM_USES.items():
            if given("warm", name) and w.study not in users and mode not in users:
                names = ", ".join(u.replace("+shrink", " with --stage-shrink") for u in users)
                raise UserError(f"{option(name)} is not used by --study {w.study}; it is a setting of --study {names}")
        for name, study in WARM_SWEEPS.items():
            if w.study != study and len(numbers(getattr(w, name), name)) > 1:
                raise UserError(f"--study {w.study} takes one {option(name)}, got {getattr(w, name)!r}; sweep "
                                f"several with --study {study}")
    elif command == "critical-period":
        c = config.critical
        unused = [("switch_at", "--window (whose windows start at --starts)"),
                  ("direction", "--window (deficit during each window)")] if c.window.strip() else \
                 [("starts", "no --window (the switch points are --switch-at)")]
        if c.total_steps.strip():
            unused.append(("after", "--total-steps (every arm ends there)"))
        for name, why in unused:
            if given("critical", name):
                raise UserError(f"{option(name)} is not used with {why}; drop it")
    elif command == "imp":
        i = config.imp
        if given("imp", "perturb_scale") and i.perturb != "noise":
            raise UserError(f"{option('perturb_scale')} is a setting of --perturb noise (this run perturbs: "
                            f"{i.perturb}); drop it")
        if given("imp", "control_seed") and i.control == "none" and i.perturb == "none":
            raise UserError(f"{option('control_seed')} seeds a --control or --perturb, and this run has neither; "
                            "drop it")


def base_type(f: dataclasses.Field) -> str:
    """'str', 'int', 'float' or 'bool': a field's type, without the `| None` of optional ones."""
    return str(f.type).removesuffix(" | None")


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
    `--optimizers` (each entry), `--pretrain-optimizer` or `--second-optimizer`: each optimizer
    setting given is one at least one of them takes; betas and nesterov make sense."""
    t, w = config.train, config.warm
    entries = optimizer_list(w.optimizers)
    # With --optimizers, its entries are the first phases' optimizers (a first phase built from one
    # trains with that entry's kind as --optimizer).
    kinds = [entry[0] for entry in entries]
    if kinds and t.optimizer not in kinds and t.optimizer != _default("optimizer"):
        raise UserError(f"--optimizer {t.optimizer} is not used: --optimizers ({w.optimizers}) sets the optimizer "
                        "of every first phase; drop one of them")
    used = set(kinds or [t.optimizer])
    if config.pretrain.pretrain != "none" and config.pretrain.pretrain_optimizer != "same":
        used.add(config.pretrain.pretrain_optimizer)
    if w.second_optimizer != "same":
        used.add(w.second_optimizer)
    given = {"momentum": t.momentum is not None, "nesterov": t.nesterov, "betas": bool(t.betas.strip()),
             "eps": t.eps is not None, "alpha": t.alpha is not None}
    for name, takers in OPTIMIZER_FIELDS.items():
        if given[name] and not used & set(takers):
            raise UserError(f"{name} is a setting of {' and '.join(takers)}, and this run uses "
                            f"{', '.join(sorted(used))}; drop --{name}, or choose an optimizer that takes it "
                            f"(e.g. --optimizer {takers[0]})")
    for kind, *own in entries:  # an entry's own settings after its learning rate (KIND:LR:MOMENTUM)
        if len(own) > 1 and own[1] is not None and kind not in OPTIMIZER_FIELDS["momentum"]:
            raise UserError(f"momentum is a setting of {' and '.join(OPTIMIZER_FIELDS['momentum'])}, and the "
                            f"--optimizers entry {kind} takes none; drop it there")
    betas(t.betas)
    if t.nesterov and optimizer_settings(t, "sgd")["momentum"] == 0:
        raise UserError("nesterov needs a momentum above 0; drop --nesterov or set --momentum")


def _default(name: str) -> Any:
    return all_fields()[name][1].default


def _coerce(name: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    if value is None and str(f.type).endswith("| None"):
        return None  # optional: the optimizer's (or phase's) default
    want = {"str": str, "int": int, "float": float, "bool": bool}[base_type(f)]
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        finite(name.rpartition(".")[2], value, "" if where == "options" else where)
        return float(value)
    if want is str and isinstance(value, (int, float, list)) and not isinstance(value, bool):
        return ",".join(map(str, value)) if isinstance(value, list) else str(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise UserError(f"{name} in {where} must be {want.__name__}, got {value!r}")
    return value


def _unknown(key: str, known: list[str], where: str) -> UserError:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(known))}"
    return UserError(f"unknown config key {key!r} in {where}{hint}")


def from_sections(sections: dict[str, Any], overrides: dict[str, Any] | None = None, where: str = "config",
                  schema: dict[str, type] | None = None, make: Any = None) -> Any:
    """Build a Config from `{section: {key: value}}` plus flat `overrides` (CLI flags win).

    Another set of sections (`schema`, section -> dataclass) builds `make(**sections)` instead:
    the deep-linear studies keep their settings apart from the CNN trainer's.
    """
    schema = schema or SECTIONS
    known = all_fields(schema)
    values: dict[str, dict[str, Any]] = {s: {} for s in schema}
    for section, table in sections.items():
        if section not in schema:
            raise _unknown(section, list(schema), where)
        if not isinstance(table, dict):
            raise UserError(f"[{section}] in {where} must be a table of key = value lines")
        section_keys = [f.name for f in fields(schema[section])]
        for key, value in table.items():
            if key not in section_keys:
                dotted = [f"{s}.{k}" for k, (s, _) in known.items()]
                raise _unknown(f"{section}.{key}", dotted, where)
            values[section][key] = _coerce(f"{section}.{key}", known[key][1], value, where)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise _unknown(key, list(known), "options")
        section, f = known[key]
        values[section][key] = _coerce(key, f, value, "options")
    return (make or Config)(**{s: cls(**values[s]) for s, cls in schema.items()})


def from_record(sections: dict[str, Any], overrides: dict[str, Any] | None = None,
                where: str = "manifest") -> Config:
    """A Config from the config a manifest records, also one written by an earlier rewind.

    Settings renamed since are read under their new names, a width recorded as 0 (the model's
    own) as unset, and a pre-trained archive that predates `pretrain_schedule` is read as
    restart, the way it trained.
    """
    sections = {name: dict(table) if isinstance(table, dict) else table for name, table in sections.items()}
    pre, crit = sections.get("pretrain", {}), sections.get("critical", {})
    model = sections.get("model", {})
    if model.get("width") == 0:
        model["width"] = None  # written 0 for the model's own width before the default was unset
    if pre.get("pretrain", "none") != "none":
        pre.setdefault("pretrain_schedule", "restart")
    if "removal" in crit:
        crit["switch_at"] = crit.pop("removal")
    if crit.get("direction") in _OLD_DIRECTIONS:
        crit["direction"] = _OLD_DIRECTIONS[crit["direction"]]
    return from_sections(sections, overrides, where)


_OLD_DIRECTIONS = {"remove": "deficit-then-normal", "add": "normal-then-deficit"}


def replicate(config: Config, r: int) -> Config:
    """Replicate r: every seed shifted by r (replicate 0 is the config itself)."""
    t = config.train
    return config.with_values(model_seed=t.model_seed + r, order_seed=t.order_seed + r, aug_seed=t.aug_seed + r)


def load(path: str | Path | None, overrides: dict[str, Any] | None = None, schema: dict[str, type] | None = None,
         make: Any = None) -> Any:
    """Defaults, then the TOML file (if any), then `overrides` (`schema`, `make`: as in `from_sections`)."""
    return from_sections(_read(path), overrides, where=str(path) if path else "config", schema=schema, make=make)


def given(path: str | Path | None, overrides: dict[str, Any]) -> set[str]:
    """The field names the TOML file or `overrides` set: what the user asked for, defaults aside."""
    return {key for table in _read(path).values() if isinstance(table, dict) for key in table} | set(overrides)


def _read(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist; see configs/ for the shipped recipes")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {e}") from None


def to_toml(config: Config | dict[str, Any]) -> str:
    """TOML text of a config (or of a manifest's recorded settings: top-level values first, then tables)."""
    d = config if isinstance(config, dict) else config.to_dict()
    lines = [f"{key} = {json.dumps(value)}" for key, value in d.items() if not isinstance(value, dict)
             and value is not None]
    lines += [""] if lines else []
    for section, table in ((k, v) for k, v in d.items() if isinstance(v, dict)):
        lines.append(f"[{section}]")
        for key, value in table.items():
            if value is not None:  # an optional field left to its default (TOML has no null)
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """'section.key: a -> b' for every value that differs between two config dicts (of sections, or
    flat, as the deep-linear studies' identities are, or nested deeper)."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "RuntimeConfig", "load", "from_sections",
           "to_toml", "diff", "all_fields", "replace"]

"""The plasticity studies' settings (`rewind warm-start`): the `[warm]` section, its list parsers, and
which study uses which setting. Torch-free: the CLI reads its flags from it; `rewind.studies.sections`
registers it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewind import config as cfg
from rewind import steps
from rewind.errors import UserError
from rewind.settings import _f, numbers

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
    second_steps: str = _f("160ep", "warm start: length of the second phase, on all the data", step="one")
    second_optimizer: str = _f("same", "warm start: optimizer of the second phase (same = the first phase's)",
                               choices=("same", *cfg.OPTIMIZERS))
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
                              "own data D_i (so stage lengths are proportional to |D_i|, Berariu A.3; --steps in "
                              "iterations gives every stage the same length), then --second-steps on all of it. n "
                              "stages need n + 1 class groups: at most one fewer than the dataset has classes. The "
                              "optimizer state is reset at each stage unless --optimizer-state carry")
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

    def check(self, config: cfg.Config) -> None:
        """The lists in range, one value each where only one makes sense, and a second phase to train."""
        for name in ("shrink", "perturb_sigma"):
            if not numbers(getattr(self, name), name):
                raise UserError(f"{cfg.option(name)} needs a value, e.g. '0.6'")
        numbers(self.second_lr, "second_lr", strict=True)
        numbers(self.first_lr, "first_lr", strict=True)
        numbers(self.reset_from, "reset_from", int, 1)
        entries = optimizer_list(self.optimizers)
        if twice := next((e for i, e in enumerate(entries) if e in entries[:i]), None):
            raise UserError(f"{cfg.option('optimizers')} lists {':'.join(str(v) for v in twice if v is not None)} "
                            f"twice ({self.optimizers!r}): each entry is one first phase; give it once")
        kinds = [entry[0] for entry in entries]
        # With --optimizers, its entries are the first phases' optimizers (a first phase built from one
        # trains with that entry's kind as --optimizer).
        t = config.train
        if kinds and t.optimizer not in kinds and t.optimizer != cfg.default("optimizer"):
            raise UserError(f"--optimizer {t.optimizer} is not used: --optimizers ({self.optimizers}) sets the "
                            "optimizer of every first phase; drop one of them")
        for name in ("stages", "stage_ratio", "transition_gamma"):  # the values their studies sweep
            if not str(getattr(self, name)).strip():
                raise UserError(f"{cfg.option(name)} needs at least one value, e.g. "
                                f"'{ {'stages': '1,2,4', 'stage_ratio': '0,0.5'}.get(name, '0.9,0.99')}'")
        numbers(self.stages, "stages", int, 1)
        if any(r > 1 for r in numbers(self.stage_ratio, "stage_ratio")):
            raise UserError(f"{cfg.option('stage_ratio')} must be in [0, 1]; got {self.stage_ratio!r}")
        if any(g > 1 for g in numbers(self.transition_gamma, "transition_gamma")):
            raise UserError(f"{cfg.option('transition_gamma')} must be in [0, 1]; got {self.transition_gamma!r}")
        numbers(self.widths, "widths", int, 1)
        numbers(self.depths, "depths", int, 1)
        steps.check_points(self.first_steps, "first_steps")
        cfg.check_length(self.second_steps, "second_steps")

    def trains_with(self, config: cfg.Config) -> set[str]:
        """The optimizers a warm-start study trains with: the first phases' (`--optimizers`, else
        `--optimizer`) and the second phase's, for `config`'s one rule on optimizer settings."""
        kinds = {entry[0] for entry in optimizer_list(self.optimizers)} or {config.train.optimizer}
        return kinds | ({self.second_optimizer} if self.second_optimizer != "same" else set())


def optimizer_list(text: str) -> list[tuple[str, float | None, float | None]]:
    """'sgd:0.1:0.9,adam' -> [('sgd', 0.1, 0.9), ('adam', None, None)]: KIND[:LR[:MOMENTUM]], the
    momentum for the optimizers that take one (sgd, rmsprop)."""
    out = []
    form = "write KIND[:LR[:MOMENTUM]], e.g. 'sgd:0.1:0,sgd:0.1:0.9,rmsprop:0.001'"
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        kind, lr, momentum, *rest = [*part.split(":"), "", ""]
        if kind not in cfg.OPTIMIZERS or any(rest):
            raise UserError(f"optimizers: {part!r} is not KIND[:LR[:MOMENTUM]] with KIND one of "
                            f"{', '.join(cfg.OPTIMIZERS)}; {form}")
        if momentum and kind not in cfg.OPTIMIZER_FIELDS["momentum"]:
            raise UserError(f"optimizers: {part!r}: {kind} takes no momentum (sgd and rmsprop do); {form}")
        m = numbers(momentum, "optimizers' momenta")[0] if momentum else None
        if m is not None and m >= 1:
            raise UserError(f"optimizers: {part!r}: a momentum must be in [0, 1); {form}")
        out.append((kind, numbers(lr, "optimizers' learning rates", strict=True)[0] if lr else None, m))
    return out


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


def settle_recipe(config: cfg.Config, path: str | Path | None, flags: set[str]) -> cfg.Config:
    """A recipe file serves every warm-start study: the settings it gives for its own study (its
    `study`, arms by default) that the study chosen on the command line does not use go back to
    their defaults, so they are neither refused nor recorded. A file setting its own study does not
    use, and any such option on the command line, stay for `check_used` to refuse."""
    table = cfg.read_toml(path).get("warm", {})
    table = table if isinstance(table, dict) else {}
    own = _warm_mode(str(table.get("study", cfg.default("study"))), bool(table.get("stage_shrink", False)))
    chosen = _warm_mode(config.warm.study, config.warm.stage_shrink)
    back = {name: cfg.default(name) for name, users in WARM_USES.items()
            if name in table and name not in flags and own in users and chosen not in users}
    return config.with_values(**back) if back else config


def check_used(config: cfg.Config) -> None:
    """UserError for a warm-start setting the chosen study does not use, naming the study or mode that does."""
    w = config.warm
    mode = _warm_mode(w.study, w.stage_shrink)
    for name, users in WARM_USES.items():
        if getattr(w, name) != cfg.default(name) and w.study not in users and mode not in users:
            names = ", ".join(u.replace("+shrink", " with --stage-shrink") for u in users)
            raise UserError(f"{cfg.option(name)} is not used by --study {w.study}; it is a setting of --study {names}")
    for name, study in WARM_SWEEPS.items():
        if w.study != study and len(numbers(getattr(w, name), name)) > 1:
            raise UserError(f"--study {w.study} takes one {cfg.option(name)}, got {getattr(w, name)!r}; sweep "
                            f"several with --study {study}")

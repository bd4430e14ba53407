"""The IMP study's settings: the `[imp]` section, what it needs of a run, and what identifies a branch.
Torch-free: the CLI reads its flags from it; `rewind.studies.sections` registers it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rewind import config as cfg
from rewind import steps
from rewind.errors import UserError
from rewind.settings import _f


@dataclass(frozen=True)
class ImpConfig:
    levels: int = _f(20, "IMP rounds; level L trains at density (1 - prune_fraction)^L", valid="count0")
    rewind_iter: str = _f("0it", "rewind surviving weights to this trunk iteration, e.g. 500 or '2ep'; several, "
                                 "comma-separated ('0,100,500'), sweep the rewind point", step="list")
    prune_fraction: float = _f(0.2, "fraction of the remaining weights removed per level", valid="open_unit")
    layerwise: bool = _f(False, "prune each layer by the same fraction instead of by global magnitude")
    dense_layers: str = _f("", "comma-separated weights (or prefixes) never pruned, e.g. 'conv.weight,fc.weight'")
    rewind_optimizer: bool = _f(False, "restore the trunk's optimizer state at the rewind point (momentum, Adam's "
                                                 "moments; zero at pruned weights) instead of a fresh optimizer")
    control: str = _f("none", "control with the same masks: random-reinit or random-prune (same per-layer density)",
                      choices=("none", "random-reinit", "random-prune"))
    perturb: str = _f("none", "perturb the rewind-point weights under the plain branch's masks (kept weights only; "
                              "std: the layer's init std): sign-keep: each sign kept, magnitudes redrawn from the "
                              "init distribution; shuffle: kept weights permuted within the layer; "
                              "shuffle-keep-signs: magnitudes permuted, each position keeps its sign; noise: "
                              "w + N(0, (perturb_scale * std)^2); reinit: fresh draws N(0, std^2)",
                      choices=("none", "sign-keep", "shuffle", "shuffle-keep-signs", "noise", "reinit"))
    perturb_scale: float = _f(1.0, "noise perturbation: standard deviation in units of each layer's init std",
                              valid="nonnegative")
    control_seed: int = _f(0, "seed of the control's or perturbation's random weights or masks", valid="count0")

    def check(self, config: cfg.Config) -> None:
        if not steps.parse_list(self.rewind_iter, 1):
            raise UserError("rewind_iter must name at least one iteration, e.g. '500' or '0,100,500'")
        if self.control != "none" and self.perturb != "none":
            raise UserError(f"--control {self.control} and --perturb {self.perturb} exclude each other: a control "
                            "replaces the rewind-point weights or masks that a perturbation changes; run them as "
                            "two branches")


def check_used(config: cfg.Config) -> None:
    """UserError for an IMP setting this run does not use."""
    i = config.imp
    cfg.check_fit_alone(config.study.parallel, config.train.until_train_acc)  # before the trunk trains
    if i.perturb_scale != cfg.default("perturb_scale") and i.perturb != "noise":
        raise UserError(f"{cfg.option('perturb_scale')} is a setting of --perturb noise (this run perturbs: "
                        f"{i.perturb}); drop it")
    if i.control_seed != cfg.default("control_seed") and i.control == "none" and i.perturb == "none":
        raise UserError(f"{cfg.option('control_seed')} seeds a --control or --perturb, and this run has neither; "
                        "drop it")


def plain(config: cfg.Config) -> cfg.Config:
    """The same IMP settings without control or perturbation: the branch whose masks those reuse."""
    return config.with_values(control="none", perturb="none", control_seed=0, perturb_scale=1.0)


def branch_identity(config: cfg.Config, k: int) -> dict[str, Any]:
    """What identifies an IMP branch of a trunk: the IMP settings that change its results, and the
    rewind point in iterations (so '50' and '50it' are one branch)."""
    imp = dataclasses.asdict(config.imp)
    del imp["levels"]  # more levels extend a branch
    imp["rewind_iter"] = k
    if imp["control"] == "none" and imp["perturb"] == "none":
        del imp["control_seed"]
    if imp["perturb"] != "noise":
        del imp["perturb_scale"]
    return {"trunk": config.hash(), "imp": imp}

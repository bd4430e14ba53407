"""The critical-period study's settings: the `[critical]` section and what it needs of a run.
Torch-free: the CLI reads its flags from it; `rewind.studies.sections` registers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rewind import config as cfg
from rewind import steps
from rewind.errors import UserError
from rewind.settings import _f

# Directions as archives made before they were named by what the network receives recorded them.
_OLD_DIRECTIONS = {"remove": "deficit-then-normal", "add": "normal-then-deficit"}


@dataclass(frozen=True)
class CriticalConfig:
    switch_at: str = _f("0,20,40,60,80ep", "critical period: the points t swept, where each arm switches: the "
                                           "deficit ends at t (deficit-then-normal) or begins at t "
                                           "(normal-then-deficit); a bare number takes the unit written last: "
                                           "'0,20,40ep' is epochs 0, 20 and 40")
    direction: str = _f("deficit-then-normal", "critical period: what the network receives, in order: the deficit "
                                               "until t, then normal training (Achille et al.), or normal training, "
                                               "then the deficit from t. For no-weight-decay and no-augmentation the "
                                               "deficit is the regulariser off: deficit-then-normal is 'off, then on'",
                        choices=("deficit-then-normal", "normal-then-deficit"))
    after: str = _f("160ep", "critical period: training after each switch point or window (Achille et al.); "
                             "not used with --total-steps", step="one")
    total_steps: str = _f("", "critical period: end every arm at this iteration instead, so that all train the "
                              "same total (Golatkar et al.), e.g. '160ep'; empty: --after", step="one")
    window: str = _f("", "critical period: deficit window length; with it, --starts are swept instead of --switch-at",
                     step="one")
    starts: str = _f("0,20,40,60,80ep", "critical period: window start points (with --window); a bare number takes "
                                        "the unit written last: '0,20,40ep' is epochs 0, 20 and 40")

    def check(self, config: cfg.Config) -> None:
        for name in ("switch_at", "starts"):
            if not str(getattr(self, name)).replace(",", "").strip():
                raise UserError(f"{name} must list at least one step, e.g. '0,20,40ep'")
            steps.check_points(getattr(self, name), name)

    @staticmethod
    def migrate(table: dict[str, Any]) -> dict[str, Any]:
        """A table recorded before `switch_at` and the named directions, read under today's names."""
        if "removal" in table:
            table["switch_at"] = table.pop("removal")
        if table.get("direction") in _OLD_DIRECTIONS:
            table["direction"] = _OLD_DIRECTIONS[table["direction"]]
        return table


def check_used(config: cfg.Config) -> None:
    """UserError for a critical-period setting this sweep does not use."""
    c = config.critical
    cfg.check_fit_alone(config.study.parallel, config.train.until_train_acc)  # before the trunk trains
    unused = [("switch_at", "--window (whose windows start at --starts)"),
              ("direction", "--window (deficit during each window)")] if c.window.strip() else \
             [("starts", "no --window (the switch points are --switch-at)")]
    if c.total_steps.strip():
        unused.append(("after", "--total-steps (every arm ends there)"))
    for name, why in unused:
        if getattr(c, name) != cfg.default(name):
            raise UserError(f"{cfg.option(name)} is not used with {why}; drop it")

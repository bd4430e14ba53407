"""Settings of `rewind reproduce`: a section of their own (`[reproduce]`), with the deep-linear
studies' `[runtime]` and the launcher's `[launch]`, built by the same config machinery as every
study (unknown keys are errors, every field is a flag). No torch here: the CLI imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rewind.errors import UserError
from rewind.launch.settings import LaunchConfig
from rewind.linear.config import LinearRuntimeConfig, counts
from rewind.settings import Settings, _f

SCALES = ("smoke", "paper")
DEFAULT_SEEDS = {"smoke": "0", "paper": "0,1,2"}


@dataclass(frozen=True)
class ReproduceConfig:
    scale: str = _f("smoke", "smoke: a reduced version of every figure, for tests and a first look (seconds to "
                             "minutes); paper: the paper's settings", choices=SCALES)
    seeds: str = _f("", "seeds, comma-separated, for every run of every figure (empty: 0 at smoke scale, 0,1,2 at "
                        "paper scale); adding one trains only its arms")
    reference: bool = _f(False, "draw the paper's values (or the authors' code's, run on its settings) beside "
                                "rewind's where they are known, each with its source in the figure's CSV; at "
                                "--scale paper only (they are values at the paper's settings)")

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise UserError(f"scale must be one of {', '.join(SCALES)}; got {self.scale!r}")
        counts(self.seeds, "seeds")  # the form, early: an empty list means the scale's seeds

    def seed_list(self) -> list[int]:
        return counts(self.seeds.strip() or DEFAULT_SEEDS[self.scale], "seeds")


class ReproduceStudy(Settings):
    """`settings.reproduce`, `settings.runtime` (the deep-linear studies') and `settings.launch`."""

    SECTIONS: ClassVar[dict[str, type]] = {"reproduce": ReproduceConfig, "runtime": LinearRuntimeConfig,
                                           "launch": LaunchConfig}


def load(overrides: dict[str, Any] | None = None, path: str | None = None) -> ReproduceStudy:
    """Defaults, then the TOML file `path` (if any: `[reproduce]`, `[runtime]`, `[launch]`), then `overrides`."""
    return ReproduceStudy.load(path, overrides)


def from_dict(sections: dict[str, Any]) -> ReproduceStudy:
    return ReproduceStudy.from_sections(sections)

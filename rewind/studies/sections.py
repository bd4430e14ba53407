"""Every study's and executor's settings section, registered with the settings they belong to: a
run's `Config` gains `[imp]`, `[critical]`, `[warm]`, `[study]` and `[launch]` (in that order,
between `[pretrain]` and `[runtime]`, `[launch]` last), the deep-linear studies `[launch]`. Each
section is defined by its owner, torch-free; `rewind.studies` imports this module, so a config built
once any study (or the CLI) is loaded holds them all."""

from __future__ import annotations

from dataclasses import dataclass

from rewind.config import Config
from rewind.launch.settings import LaunchConfig
from rewind.linear.config import CompletionStudy, PathwaysStudy
from rewind.settings import _f, register
from rewind.studies.critical_settings import CriticalConfig
from rewind.studies.imp_settings import ImpConfig
from rewind.studies.plasticity_settings import WarmConfig


@dataclass(frozen=True)
class StudyConfig:
    """What every study over several runs shares: replicates, and runs trained together."""

    replicates: int = _f(1, "independent runs with the model, order and augmentation seeds shifted by 0..R-1; results "
                            "report mean and spread", valid="count1")
    parallel: int = _f(1, "train up to this many runs together on one device (replica trainer): imp: branches of "
                          "one level (or replicate trunks); critical-period: continuations; warm-start: arms of one "
                          "first phase (runs that stop by fit, and stages that reset the optimizer state or "
                          "shrink-perturb, train one at a time)", valid="count1")


register(Config, "imp", ImpConfig, after="pretrain")
register(Config, "critical", CriticalConfig, after="imp")
register(Config, "warm", WarmConfig, after="critical")
register(Config, "study", StudyConfig, after="warm")
for kind in (Config, PathwaysStudy, CompletionStudy):
    register(kind, "launch", LaunchConfig)

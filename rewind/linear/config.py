"""Settings of the deep-linear studies: frozen dataclass sections, one source for TOML keys and CLI flags.

They share nothing with the CNN trainer's `Config` (no data, model or optimizer settings), so they
are kinds of settings of their own (`[pathways]` or `[completion]`, and `[runtime]`; `rewind.studies`
registers the executors' `[launch]` with them) built with the same machinery (`rewind.settings`):
unknown keys are errors, every field is a flag. Step lists accept `1k` for 1000.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from rewind.errors import UserError
from rewind.settings import Settings, _f, numbers

_COUNT = re.compile(r"^(\d+)(k?)$")


def counts(text: str, what: str, allow_k: bool = False) -> list[int]:
    """'0,1k,5k' -> [0, 1000, 5000] (sorted, unique); `k` only where `allow_k`."""
    out = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        m = _COUNT.match(part)
        if not m or (m[2] and not allow_k):
            example = "'0,1k,5k' (1k = 1000)" if allow_k else "'2,3,4'"
            raise UserError(f"bad {what} {text!r}: write whole numbers separated by commas, e.g. {example}")
        out.append(int(m[1]) * (1000 if m[2] else 1))
    return sorted(set(out))


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise UserError(f"{name} must be positive, got {value}")


def _at_least(minimum: int, **values: int) -> None:
    for name, value in values.items():
        if value < minimum:
            raise UserError(f"{name} must be at least {minimum}, got {value}")


def _choices(section: Any) -> None:
    for f in dataclasses.fields(section):
        choices = f.metadata.get("choices")
        if choices and getattr(section, f.name) not in choices:
            raise UserError(f"{f.name} must be one of {', '.join(choices)}; got {getattr(section, f.name)!r}")


def _depths(text: str) -> list[int]:
    depths = counts(text, "depth")
    if not depths or min(depths) < 1:
        raise UserError(f"depth must list depths of at least 1 (weight matrices per network), e.g. '2,3,4'; "
                        f"got {text!r}")
    return depths


def _seeds(text: str) -> list[int]:
    seeds = counts(text, "seeds")
    if not seeds:
        raise UserError("seeds must list at least one seed, e.g. '0' or '0,1,2'")
    return seeds


@dataclass(frozen=True)
class PathwaysConfig:
    depth: str = _f("2,3,4", "depths D (weight matrices per pathway), comma-separated; each depth and seed is a trunk")
    deficit_start: str = _f("0,400,750", "onsets of the gating deficit (steps), comma-separated; each is a branch "
                                         "from the deficit-free trunk's checkpoint there; empty = no deficit arms")
    deficit_length: int = _f(150, "steps during which pathway b gets no gradient (its output still counts)")
    steps: int = _f(1000, "full-batch gradient-descent steps of every arm")
    lr: float = _f(0.01, "learning rate (loss: 0.5 * summed squared error over the 8 items)")
    width: int = _f(100, "hidden width of each pathway")
    pathways: int = _f(2, "parallel pathways whose outputs add; the deficit gates pathway b (the second)")
    init: str = _f("balanced", "balanced: every layer aligned with the task's singular vectors, per-mode singular "
                               "values k^(1/D) (the analytical solution applies exactly); gaussian: random layers",
                   choices=("balanced", "gaussian"))
    init_scale: float = _f(0.01, "initial per-mode singular value k of each pathway's end-to-end map "
                                 "(balanced: k = init_scale * (1 + init_noise * N(0,1)), see --init-draw; "
                                 "gaussian: its typical size)")
    init_noise: float = _f(0.1, "balanced init: relative spread of k between modes")
    init_draw: str = _f("width", "balanced init, how the 8 modes' k are drawn: width: `width` values, sorted in "
                                 "descending order, the modes taking the largest 8, from torch's generator seeded "
                                 "with the seed (the authors' code: seed S draws their seed S's values); modes: 8 "
                                 "values, one per mode (rewind before issue 19)", choices=("width", "modes"))
    hidden_init: str = _f("modes", "balanced init, the hidden layers: modes: each passes only the task's 8 modes, "
                                   "through its own random basis; full: the authors' MultipathwayNet, one "
                                   "width x width orthogonal basis for every hidden layer, the hidden-to-hidden "
                                   "layers passing all `width` drawn values (the same K in a linear network; it "
                                   "matters with a nonlinearity)", choices=("modes", "full"))
    nonlinearity: str = _f("none", "elementwise nonlinearity after every layer, the output's included (the "
                                   "authors' nonlinear pathways); the analytical curve holds only without one",
                           choices=("none", "tanh", "relu"))
    lesion_mode: int = _f(0, "feature lesion (the authors' gate_sing): pathway a permanently loses this mode "
                             "(1 = strongest; its output and gradient in that mode are removed, the mode's "
                             "couplings with the others too), while the gating deficit still gates pathway b; "
                             "0 = off")
    seeds: str = _f("0", "seeds, comma-separated; a seed draws the init (k per mode, hidden bases)")
    record_every: int = _f(10, "record per-mode singular values and the loss every this many steps "
                               "(metrics.csv, curves.csv, TensorBoard)")
    save_every: int = _f(0, "also checkpoint every this many steps (0: only at the onsets and the end)")

    def __post_init__(self) -> None:
        depths, starts = _depths(self.depth), counts(self.deficit_start, "deficit_start")
        _seeds(self.seeds)
        _positive(lr=self.lr, init_scale=self.init_scale)
        _at_least(1, steps=self.steps, deficit_length=self.deficit_length, width=self.width,
                  pathways=self.pathways, record_every=self.record_every)
        _at_least(0, save_every=self.save_every)
        if self.init_noise < 0:
            raise UserError(f"init_noise must be >= 0, got {self.init_noise}")
        _choices(self)
        if starts and self.pathways < 2:
            raise UserError("a gating deficit needs at least 2 pathways (it gates pathway b); "
                            "set --pathways 2 or --deficit-start ''")
        if starts and starts[-1] + self.deficit_length > self.steps:
            raise UserError(f"deficit window {starts[-1]}-{starts[-1] + self.deficit_length} ends after the run's "
                            f"{self.steps} steps; use a later --steps, an earlier --deficit-start or a shorter "
                            "--deficit-length")
        if self.init == "balanced" and self.init_draw == "width" and max(_seeds(self.seeds)) >= 2 ** 64:
            raise UserError("the authors' draw (--init-draw width) seeds torch's generator with the seed itself: "
                            "use seeds below 2^64")
        if self.init == "balanced" and self.width < 8 and (max(depths) > 1 or self.init_draw == "width"):
            raise UserError(f"a balanced init needs width >= 8 (the task's 8 modes), got {self.width}")
        if self.hidden_init == "full" and (self.init != "balanced" or self.init_draw != "width"):
            raise UserError("--hidden-init full is the authors' balanced init: it needs --init balanced and "
                            "--init-draw width (all `width` values of k)")
        if not 0 <= self.lesion_mode <= 8:
            raise UserError(f"lesion_mode must be a mode from 1 (strongest) to 8, or 0 for none; got {self.lesion_mode}")
        if self.lesion_mode and self.pathways < 2:
            raise UserError("a feature lesion removes a mode from pathway a while pathway b may learn it: "
                            "it needs --pathways 2 or more")


@dataclass(frozen=True)
class CompletionConfig:
    depth: str = _f("1,2,3", "depths D of the factorisation (N x N layers), comma-separated; each depth and seed "
                             "is a trunk")
    pretrain_steps: str = _f("0,1k,5k,10k,20k,40k,60k,80k,100k",
                             "T_c: steps on task 1 before the switch to task 2, comma-separated (1k = 1000); each "
                             "is a branch from the task-1 trunk's checkpoint there")
    task2_steps: int = _f(30000, "steps on task 2 after the switch")
    size: int = _f(100, "N: the target matrices are N x N")
    task1_rank: str = _f("10", "rank of task 1's target; a comma-separated list sweeps it (every value an arm of "
                               "the same batched program)")
    task2_rank: int = _f(5, "rank of task 2's target (independent of task 1's)")
    observations: str = _f("2000", "observed entries, the same for both tasks; a list sweeps it")
    subset_observations: str = _f("0", "subset variant: task 1 is task 2's own matrix seen on only the first this "
                                       "many of its observed entries (0 = off); a list sweeps it")
    init: str = _f("gaussian", "layer init (the authors' matrixcompletion/model_utils.py): gaussian: each layer "
                               "N(0, init_scale^(2/D) / N); orthogonal: each a random orthogonal matrix times "
                               "(init_scale * sqrt(N))^(1/D); identity: each the identity times init_scale^(1/D)",
                   choices=("gaussian", "orthogonal", "identity"))
    init_scale: str = _f("0.001", "init scale (see --init); a comma-separated list sweeps it")
    lr: float = _f(0.2, "learning rate (loss: 0.5 * mean squared error over the observed entries)")
    timing: str = _f("paper", "the switch: paper: task 1 for exactly T_c steps, then task 2 for task2_steps, the "
                              "error read after the last; code: as the authors' loop (matrixcompletion/main.py) "
                              "runs: task 1 for T_c + 1 steps, task 2 for task2_steps - 1, the error read "
                              "before the last (after task2_steps - 2)", choices=("paper", "code"))
    flow: bool = _f(False, "also integrate the analytical gradient flow of the end-to-end map (Arora et al. "
                           "2018-2019) from each arm's init, its singular values beside the simulation's "
                           "(curves.csv sv_<i>_flow; cached in the trunk's analysis/ folder)")
    seeds: str = _f("0", "seeds, comma-separated; a seed draws the targets, the observed entries and the init")
    singular_values: int = _f(10, "top singular values of the end-to-end map to record")
    record_every: int = _f(500, "record errors and singular values every this many steps")
    save_every: int = _f(10000, "also checkpoint every this many steps, so a killed run resumes close to where "
                                "it stopped (0: only at the T_c and the ends)")
    relative: bool = _f(False, "completion_error.png plots the authors' quantity, error(T_c = 0) - error(T_c) "
                               "(negative where pre-training hurts), instead of the final error; needs T_c = 0")

    def __post_init__(self) -> None:
        _depths(self.depth)
        _seeds(self.seeds)
        if not counts(self.pretrain_steps, "pretrain_steps", allow_k=True):
            raise UserError("pretrain_steps must list at least one T_c, e.g. '0,1k,5k'")
        _positive(lr=self.lr)
        _choices(self)
        _at_least(1, task2_steps=self.task2_steps, record_every=self.record_every, task2_rank=self.task2_rank,
                  singular_values=self.singular_values)
        _at_least(2, size=self.size)
        _at_least(0, save_every=self.save_every)
        ranks, observed, subsets, scales = self.axes()
        _at_least(1, task1_rank=min(ranks), observations=min(observed))
        _at_least(0, subset_observations=min(subsets))
        _positive(init_scale=min(scales))
        n = self.size
        for name, value in (("task1_rank", max(ranks)), ("task2_rank", self.task2_rank),
                            ("singular_values", self.singular_values)):
            if value > n:
                raise UserError(f"{name} {value} is above N = {n} (--size)")
        if max(observed) > n * n:
            raise UserError(f"observations {max(observed)} is more than the {n * n} entries of an {n} x {n} matrix")
        if max(subsets) >= min(observed):
            raise UserError(f"subset_observations {max(subsets)} must be below observations {min(observed)} "
                            "(task 1 sees part of task 2's entries)")
        if self.timing == "code" and self.task2_steps < 2:
            raise UserError("--timing code reads the error two steps before task2_steps: use --task2-steps 2 or more")

    def axes(self) -> tuple[list[int], list[int], list[int], list[float]]:
        """The swept values of task1_rank, observations, subset_observations and init_scale."""
        lists = (counts(self.task1_rank, "task1_rank"), counts(self.observations, "observations"),
                 counts(self.subset_observations, "subset_observations"),
                 numbers(self.init_scale, "init_scale", float, -math.inf))
        for name, values in zip(("task1_rank", "observations", "subset_observations", "init_scale"), lists):
            if not values:
                raise UserError(f"{name} must list at least one value")
        return lists[0], lists[1], lists[2], sorted(set(lists[3]))

    def check_sweep(self) -> None:
        """What concerns the whole sweep, not the runs it is narrowed to (a branch's settings hold its one
        T_c): --relative needs the T_c = 0 arms."""
        if self.relative and 0 not in counts(self.pretrain_steps, "pretrain_steps", allow_k=True):
            raise UserError("--relative plots error(T_c = 0) - error(T_c): add 0 to --pretrain-steps")


@dataclass(frozen=True)
class LinearRuntimeConfig:
    device: str = _f("auto", "where to train: auto picks CUDA when present", choices=("auto", "cpu", "cuda"))
    progress: str = _f("lines", "progress: a line per trained group on stderr, or none", choices=("lines", "none"))
    figures: bool = _f(True, "write the PNG figures (a few seconds; tables and TensorBoard are always written)")
    threads: int = _f(1, "CPU threads of torch while training (0 = torch's default); these matrices are small: "
                         "one thread was the fastest measured (README, Performance), and on a busy machine "
                         "two threads were up to 12x slower")

    def __post_init__(self) -> None:
        _choices(self)
        _at_least(0, threads=self.threads)


class PathwaysStudy(Settings):
    """The pathways study's settings: `study.pathways`, `study.runtime` (and `study.launch`)."""

    SECTIONS: ClassVar[dict[str, type]] = {"pathways": PathwaysConfig, "runtime": LinearRuntimeConfig}


class CompletionStudy(Settings):
    """The matrix-completion study's settings: `study.completion`, `study.runtime` (and `study.launch`)."""

    SECTIONS: ClassVar[dict[str, type]] = {"completion": CompletionConfig, "runtime": LinearRuntimeConfig}


def load_pathways(path: str | None = None, overrides: dict[str, Any] | None = None) -> PathwaysStudy:
    """Defaults, then the TOML file (if any), then `overrides` (flat field names)."""
    return PathwaysStudy.load(path, overrides)


def load_completion(path: str | None = None, overrides: dict[str, Any] | None = None) -> CompletionStudy:
    return CompletionStudy.load(path, overrides)

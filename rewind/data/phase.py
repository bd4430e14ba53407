"""A phase as a setting writes it: what the trainer feeds the network over an iteration window,
parsed and checked without torch (settings are checked with it before anything loads torch;
`rewind.data.phases` applies phases to batches).

A pre-training mode (rotation, random labels, blur, a subset, ...) and a critical-period
deficit (blur, label permutation, vertical flip, noise, no augmentation, no weight decay, a
subset) are one kind of object: a `Phase`, a transform of the batch (images, labels) or of the
weight decay that is active on the iteration window [start, end).

Written on the command line as `KIND[(NAME=VALUE,...)][:START-END]`, e.g. `blur:0ep-40ep`,
`blur(size=4):1000it-2ep`, `subset(fraction=0.5):0ep-10ep`, `noise:5ep-` (open end); no window
means the whole run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from rewind import steps
from rewind.errors import UserError

# Each kind with its parameters and their defaults; kinds in SEEDED also take `seed` (default 0).
KINDS: dict[str, dict[str, int | float]] = {
    "blur": {"size": 8},
    "label-permutation": {},
    "random-labels": {},
    "vertical-flip": {},
    "noise": {},
    "no-augmentation": {},
    "no-weight-decay": {},
    "subset": {"fraction": 0.5},
    "transition": {"gamma": 0.99, "fraction": 0.5},
    "stage": {"n": 1, "ratio": 0.0, "index": 1, "reset": 1},
    "rotation": {},
}
SEEDED = {"label-permutation", "random-labels", "noise", "subset", "transition", "stage", "rotation"}
FORM = "KIND[(NAME=VALUE,...)][:START-END], e.g. 'blur:0ep-40ep', 'subset(fraction=0.5):0ep-10ep' or 'noise:5ep-'"


@dataclass(frozen=True)
class Phase:
    """One transform active on iterations [start, end); end None means to the end of the run."""

    kind: str
    start: int = 0
    end: int | None = None
    params: dict[str, int | float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        reason = _problem(self.kind, self.params, self.start, self.end)
        if reason:
            kinds = f" (kinds: {', '.join(KINDS)})" if self.kind not in KINDS else ""
            raise UserError(f"bad {self.kind!r} phase: {reason}{kinds}")
        # Fill in defaults so that equal phases compare equal and print the same.
        object.__setattr__(self, "params", {**KINDS[self.kind], **self.params})

    def __hash__(self) -> int:
        return hash(str(self))

    def active(self, iteration: int) -> bool:
        return self.start <= iteration and (self.end is None or iteration < self.end)

    def overlaps(self, other: Phase) -> bool:
        inf = float("inf")
        return self.start < (other.end or inf) and other.start < (self.end or inf)

    def __str__(self) -> str:
        """The canonical spelling, in iterations (stable for manifests and run hashes)."""
        params = {**self.params, **({"seed": self.seed} if self.kind in SEEDED else {})}
        args = f"({','.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        return f"{self.kind}{args}:{self.start}it-{'' if self.end is None else f'{self.end}it'}"


def _problem(kind: str, params: dict, start: int, end: int | None) -> str | None:
    """Why these fields make no phase, or None when they do."""
    if kind not in KINDS:
        return f"unknown kind {kind!r}"
    for name in params:
        if name not in KINDS[kind]:
            return f"{kind!r} has no parameter {name!r} (its parameters: {', '.join(KINDS[kind]) or 'none'})"
    size, fraction = params.get("size", 1), params.get("fraction", 1.0)
    if not (isinstance(size, int) and size >= 1):
        return f"blur size must be a whole number of pixels >= 1, not {size!r}"
    if not 0.0 <= params.get("gamma", 0.5) <= 1.0:
        return f"transition gamma must be in [0, 1], not {params['gamma']!r}"
    if kind == "transition" and end is None:
        return "a transition needs a window with an end, e.g. 'transition:0it-5000it': its length is the N of " \
               "p = 1 - gamma^(50 n / N)"
    if kind == "stage":
        n, index, ratio = params.get("n", 1), params.get("index", 1), params.get("ratio", 0.0)
        if not (isinstance(n, int) and isinstance(index, int) and 1 <= index <= n):
            return f"a stage needs whole numbers 1 <= index <= n, not index={index!r}, n={n!r}"
        if not 0.0 <= ratio <= 1.0:
            return f"stage ratio must be in [0, 1], not {ratio!r}"
    if not 0.0 < fraction <= 1.0:
        return f"subset fraction must be in (0, 1], not {fraction!r}"
    if start < 0 or (end is not None and end <= start):
        return f"the window [{start}, {end}) is empty (START must be below END)"
    return None


_PHASE = re.compile(r"^(?P<kind>[a-z][a-z-]*)(?:\((?P<params>[^()]*)\))?(?::(?P<start>[0-9a-z]*)-(?P<end>[0-9a-z]*))?$")


def parse(text: str, iterations_per_epoch: int) -> Phase:
    """A phase from its CLI form `KIND[(NAME=VALUE,...)][:START-END]`; START empty means 0, END empty open."""

    def bad(why: str) -> UserError:
        return UserError(f"bad phase {text!r}: {why}; write {FORM}, with KIND one of {', '.join(KINDS)}")

    m = _PHASE.match(str(text).strip().replace(" ", ""))
    if not m:
        raise bad("it does not have that form")
    params: dict[str, int | float] = {}
    for item in filter(None, (m["params"] or "").split(",")):
        name, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", value):
            raise bad(f"parameter {item!r} is not NAME=NUMBER")
        params[name] = int(value) if value.isdigit() else float(value)
    seed = params.pop("seed", 0) if m["kind"] in SEEDED else 0
    window = []
    for what in ("start", "end"):
        try:
            window.append(steps.parse(m[what], iterations_per_epoch) if m[what] else None)
        except UserError:
            raise bad(f"{what} {m[what]!r} is not a step such as '500it', '2ep' or '1ep109it'") from None
    start, end = window[0] or 0, window[1]
    reason = _problem(m["kind"], params, start, end)
    if reason or not isinstance(seed, int):
        raise bad(reason or f"seed {seed!r} is not a whole number")
    return Phase(m["kind"], start, end, params, seed)


def parse_list(text: str | Sequence[str], iterations_per_epoch: int) -> list[Phase]:
    """Phases from a list or one string separated by commas outside parentheses ('' gives none)."""
    if isinstance(text, str):
        parts, depth, cur = [], 0, ""
        for ch in text:
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        text = parts + [cur]
    return [parse(p, iterations_per_epoch) for p in text if p.strip()]

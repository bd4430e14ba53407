"""Steps written `500it`, `2ep`, `1ep109it` (or a bare iteration count), stored as iterations."""

from __future__ import annotations

import math
import re

from rewind.errors import UserError

_STEP = re.compile(r"^(?:(?P<ep>\d+)ep)?(?:(?P<it>\d+)it)?$")


def check(text: str, what: str = "step") -> None:
    """Raise UserError unless `text` is a well-formed step string (empty allowed: 'none')."""
    if str(text).strip():
        _split(text, what)


def _split(text: str, what: str) -> tuple[int, int]:
    s = str(text).strip().replace(" ", "")
    if s.isdigit():
        return 0, int(s)
    m = _STEP.match(s)
    if not s or not m or (m["ep"] is None and m["it"] is None):
        raise UserError(
            f"bad {what} {text!r}: write iterations and/or epochs, e.g. '500it', '2ep' or '1ep109it'"
        )
    return int(m["ep"] or 0), int(m["it"] or 0)


def parse(text: str, iterations_per_epoch: int, what: str = "step") -> int:
    """The iteration count that `text` denotes when an epoch is `iterations_per_epoch` iterations."""
    epochs, its = _split(text, what)
    return epochs * iterations_per_epoch + its


def parse_list(text: str, iterations_per_epoch: int, what: str = "step", unique: bool = False) -> list[int]:
    """A comma-separated list of steps, e.g. '80ep,120ep'; empty text gives an empty list. `unique`:
    a step named twice (also as '1ep' and '391it') is an error."""
    out = [parse(p, iterations_per_epoch, what) for p in str(text).split(",") if p.strip()]
    if unique and (twice := next((s for i, s in enumerate(out) if s in out[:i]), None)) is not None:
        raise UserError(f"{what} {text!r} names iteration {twice} twice; give it once")
    return out


def check_list(text: str, what: str = "step") -> None:
    for p in str(text).split(","):
        if p.strip():
            check(p, what)


def iterations_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def format(iteration: int, iterations_per_epoch: int) -> str:
    """The canonical spelling of an iteration count, e.g. 500 -> '1ep109it' at 391 it/ep."""
    ep, it = divmod(iteration, iterations_per_epoch)
    if ep and it:
        return f"{ep}ep{it}it"
    return f"{ep}ep" if ep else f"{it}it"


def check_points(text: str, what: str = "step") -> None:
    """Raise UserError unless `text` is a list of points as `points` reads it (empty allowed)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    for p in parts[:-1]:
        if not p.isdigit():
            check(p, what)
    if parts:
        check(parts[-1], what)


def points(text: str, iterations_per_epoch: int, what: str = "step") -> list[int]:
    """'0,20,40,60,80ep' -> iterations, sorted, each once; a bare number takes the unit written last, as
    people write such lists."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    unit = next((u for u in ("ep", "it") if parts and parts[-1].endswith(u) and not parts[-1].endswith("epit")), "")
    return sorted({parse(p + unit if p.isdigit() else p, iterations_per_epoch, what) for p in parts})

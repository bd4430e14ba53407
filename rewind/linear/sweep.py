"""Trunks and branches of a deep-linear sweep: what to train, trained together, resumed exactly.

Layout under the study folder `--out`: one archive per trunk, `depth<D>-seed<S>/` (opened with
`open_run`), its network in `trunk/` and each branch in `branches/<kind>-<point>-<hash>/train/`.
A trunk is one deterministic full-batch gradient-descent run; the sweep asks it for checkpoints at
its points (the deficit onsets, the T_c). A point it lacks is trained from its latest checkpoint at
or before that point, which is bit for bit what saving it the first time would have written; a
branch starts from the trunk's checkpoint at its point. Every stretch saves at `save_every` and at
its end, and writes metrics.csv before the checkpoint that covers it, so a run killed at any moment
resumes from its latest checkpoint and ends with the same files as one never stopped.

Training is one tensor program per group: every stretch of one depth (all seeds, all branches)
shares the step counter of a `Batch` the study builds (its layers stacked along the batch axis);
records are kept on the device and copied to the host only when a checkpoint is written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from rewind.archive.metrics import MetricsLog
from rewind.archive.stage import Stage


class Batch(Protocol):
    """A study's stacked networks: one gradient step for all of them, and what to record."""

    columns: list[str]

    def step(self, tau: int) -> None: ...

    def record(self) -> torch.Tensor: ...  # [arms, len(columns)], on the device

    def weights(self, arm: int) -> dict[str, torch.Tensor]: ...


@dataclass
class Stretch:
    """One network to train from `start` (its weights given) to `end`, in the steps of its own run.

    `saves`: steps to checkpoint (the end among them); rows up to `logged` are in metrics.csv
    already (a trunk re-walking an earlier stretch writes none); `info`: what the study's batch
    needs about it (task, deficit window, ...)."""

    stage: Stage
    log: MetricsLog
    weights: dict[str, torch.Tensor]
    start: int
    end: int
    saves: set[int]
    record_every: int
    logged: int
    info: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.end - self.start

    def records(self) -> set[int]:
        """Steps with a metrics row: every record_every, the start, the end and every save."""
        every = self.record_every
        steps = set(range(-(-self.start // every) * every, self.end + 1, every)) | {self.start, self.end}
        return {s for s in steps | self.saves if s > self.logged}


def train(stretches: list[Stretch], batch: Batch) -> None:
    """Train every stretch to its end as one batched program (steps counted from each one's start)."""
    length = max(s.length for s in stretches)
    rows: dict[int, list[int]] = {}
    saves: dict[int, list[int]] = {}
    for i, s in enumerate(stretches):
        for step in s.records():
            rows.setdefault(step - s.start, []).append(i)
        for step in s.saves:
            saves.setdefault(step - s.start, []).append(i)
    pending: list[tuple[int, torch.Tensor]] = []
    for tau in range(length + 1):
        if tau in rows:
            pending.append((tau, batch.record()))
        if tau in saves:
            _write_rows(stretches, rows, pending, batch.columns)
            pending = []
            for i in saves[tau]:
                s = stretches[i]
                s.log.flush()  # rows first: a kill before the checkpoint is recorded drops them on resume
                s.stage.save(s.start + tau, batch.weights(i), s.metadata)
        if tau < length:
            batch.step(tau)


def _write_rows(stretches: list[Stretch], rows: dict[int, list[int]], pending: list[tuple[int, torch.Tensor]],
                columns: list[str]) -> None:
    if not pending:
        return
    values = torch.stack([v for _, v in pending]).double().cpu().numpy()  # the one host copy
    for (tau, _), table in zip(pending, values):
        for i in rows[tau]:
            stretches[i].log.log("linear", stretches[i].start + tau, dict(zip(columns, map(float, table[i]))))


def trunk_legs(held: list[int], points: list[int], save_every: int) -> list[tuple[int, list[int]]]:
    """The stretches a trunk must train to hold every one of `points` and its init (step 0):
    [(from, [saves])], each from its latest held checkpoint at or before its first missing point
    (from 0, the init, when nothing is held). Saves add the `save_every` grid inside each stretch;
    what is held already is not written again."""
    held_set = set(held)
    missing = sorted((set(points) | {0}) - held_set)
    legs: list[tuple[int, list[int]]] = []
    for p in missing:
        if legs:
            start, saves = legs[-1]
            if not any(saves[-1] < h < p for h in held_set):  # nothing to skip to: go on from there
                saves.append(p)
                continue
        start = max([h for h in held_set if h <= p], default=0)
        legs.append((start, [p]))
    out = []
    for start, saves in legs:
        cadence = grid(start, saves[-1], save_every)
        out.append((start, sorted({s for s in cadence | set(saves) if s >= start and s not in held_set})))
        held_set |= set(saves)
    return out


def grid(start: int, end: int, every: int) -> set[int]:
    """The multiples of `every` strictly between `start` and `end` (none when every = 0)."""
    return set(range((start // every + 1) * every, end, every)) if every else set()


def group(items: list[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from rewind.errors import UserError

        raise UserError("--device cuda, but torch sees no CUDA device here; use --device cpu or auto")
    return torch.device(name)


def archive_name(depth: int, seed: int) -> str:
    return f"depth{depth}-seed{seed}"


class Progress:
    """One line on stderr per trained group (or nothing)."""

    def __init__(self, study: str, mode: str):
        self.study, self.on = study, mode != "none"

    def __call__(self, what: str, fn: Callable[[], None]) -> None:
        began = time.perf_counter()
        fn()
        if self.on:
            print(f"{self.study}: {what} ({time.perf_counter() - began:.1f} s)", file=sys.stderr, flush=True)


def branch_dir(root: Path, kind: str, point: int, identity_hash: str) -> Path:
    return root / "branches" / f"{kind}-{point}-{identity_hash[:8]}"

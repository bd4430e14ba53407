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
records are kept on the device and copied to the host only when a checkpoint is written. A study
may cut a group into batches of at most `max_bytes` of weights (times three: activations and
gradients) each, trained one after another: matrix completion on a CPU does (`CPU_BATCH_BYTES`: 8
depth-3 arms, 13 depth-2), where a step of 17 depth-3 arms took 6% longer per arm than one of 8, and
of 26 depth-2 arms 16% longer than 13, and past the caches (27 arms) up to 1.5x (README,
Performance). Every arm is computed alike in a batch of any size, so this changes no result.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import pandas as pd
import torch

from rewind.archive.manifest import Manifest
from rewind.archive.metrics import MetricsLog
from rewind.archive.run import MANIFEST, Run, identity_hash, open_run
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


CPU_BATCH_BYTES = 3 * 2 ** 20


def batches(stretches: list[Stretch], max_bytes: int) -> list[list[Stretch]]:
    """`stretches` cut into batches of at most `max_bytes` (0: one batch), trained one after another."""
    if not max_bytes or not stretches:
        return [stretches]
    per_arm = 3 * sum(w.numel() * w.element_size() for w in stretches[0].weights.values())
    size = max(1, max_bytes // max(per_arm, 1))
    return [stretches[i:i + size] for i in range(0, len(stretches), size)]


def train_all(stretches: list[Stretch], batch_of: Callable[[list[Stretch]], Batch], max_bytes: int) -> None:
    for part in batches(stretches, max_bytes):
        train(part, batch_of(part))


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
                s.stage.save(s.start + tau, batch.weights(i),
                             {**s.metadata, "metrics_rows": s.log.rows_through(s.start + tau)})
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


@contextmanager
def threads(count: int) -> Iterator[None]:
    """torch's CPU thread count set to `count` (0: left alone) for the duration."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def archive_name(depth: int, seed: int, variant: str = "") -> str:
    """`depth<D>-seed<S>`, with a variant's own tag between (`depth3-rank2-seed0`)."""
    return f"depth{depth}{variant}-seed{seed}"


def branch_dir(trunk_root: Path, kind: str, point: int, identity: dict) -> Path:
    return trunk_root / "branches" / f"{kind}-{point}-{identity_hash(identity)[:8]}"


class Progress:
    """One line on stderr per trained group (or nothing)."""

    def __init__(self, study: str, mode: str):
        self.study, self.on = study, mode != "none"

    def __call__(self, what: str, fn: Callable[[], None]) -> None:
        began = time.perf_counter()
        fn()
        if self.on:
            print(f"{self.study}: {what} ({time.perf_counter() - began:.1f} s)", file=sys.stderr, flush=True)


def train_trunks(trunks: dict[tuple, Run], points: list[int], save_every: int, record_every: int,
                 initial: Callable[[tuple], dict[str, torch.Tensor]], info: Callable[[tuple], Any],
                 batch_of: Callable[[list[Stretch]], Batch], progress: Progress, stack: ExitStack,
                 max_bytes: int = 0) -> None:
    """Give every trunk {(depth, seed, ...): open run} a checkpoint at each of `points`, training what is
    missing; the trunks of one depth whose stretches coincide train together."""
    legs = []
    for key, trunk in trunks.items():
        depth, seed = key[0], key[1]
        stage = trunk.stage("trunk")
        held = stage.steps()
        plan = trunk_legs(held, points, save_every)
        if not plan:
            continue
        trunk.update(status="running")
        logged = max(held, default=-1)
        log = stack.enter_context(closing(stage.metrics_log(stage.load(logged) if held else None)))
        for n, (start, saves) in enumerate(plan):
            weights = stage.load(start).tensors if start in held else initial(key)
            legs.append((depth, n, Stretch(stage, log, weights, start, saves[-1], set(saves), record_every, logged,
                                           info(key), {"depth": depth, "seed": seed})))
    for (depth, _, start, end), group_ in sorted(group(legs, lambda g: (g[0], g[1], g[2].start, g[2].end)).items()):
        stretches = [leg[2] for leg in group_]
        progress(f"depth {depth}: {len(stretches)} trunk(s), steps {start}-{end}",
                 lambda: train_all(stretches, batch_of, max_bytes))
    for trunk in trunks.values():
        held = trunk.stage("trunk").steps()
        if trunk.status != "complete" or trunk.manifest.data.get("total_iterations") != held[-1]:
            trunk.complete(total_iterations=held[-1])


@dataclass
class Branch:
    """A branch of trunk (depth, seed) from its checkpoint at `point` to step `end` of its own run."""

    depth: int
    seed: int
    trunk: Run
    kind: str
    point: int
    end: int
    identity: dict[str, Any]
    config: dict[str, Any]
    key: tuple = ()  # the trunk's key (depth, seed, ...)

    @property
    def path(self) -> Path:
        return branch_dir(self.trunk.root, self.kind, self.point, self.identity)


def train_branches(branches: list[Branch], run_kind: str, save_every: int, record_every: int,
                   info: Callable[[Branch, int], Any], batch_of: Callable[[list[Stretch]], Batch],
                   progress: Progress, stack: ExitStack, max_bytes: int = 0) -> None:
    """Train every unfinished branch, from its own latest checkpoint or the trunk's at its point; all
    those of one depth together. A finished branch is not opened (its files stay as they are)."""
    todo = []
    for b in branches:
        if complete(b.path, b.identity):
            continue
        run = stack.enter_context(open_run(b.path, run_kind, b.config, b.identity, total_iterations=b.end))
        stage = run.stage("train")
        held = stage.steps()
        start = max(held, default=b.point)
        weights = (stage if held else b.trunk.stage("trunk")).load(start).tensors
        logged = start if held else b.point - 1
        log = stack.enter_context(closing(stage.metrics_log(stage.load(start) if held else None)))
        todo.append((b, run, Stretch(stage, log, weights, start, b.end, grid(start, b.end, save_every) | {b.end},
                                     record_every, logged, info(b, start),
                                     {"depth": b.depth, "seed": b.seed, "point": b.point})))
    for depth, group_ in sorted(group(todo, lambda t: t[0].depth).items()):
        stretches = [t[2] for t in group_]
        progress(f"depth {depth}: {len(stretches)} branch(es)", lambda: train_all(stretches, batch_of, max_bytes))
        for _, run, _ in group_:
            run.complete()


def complete(path: Path, identity: dict[str, Any]) -> bool:
    """Whether the run at `path` is finished with this identity."""
    if not (path / MANIFEST).exists():
        return False
    data = Manifest.read(path / MANIFEST).data
    return data.get("status") == "complete" and data.get("config_hash") == identity_hash(identity)


def metrics(stage: Stage) -> pd.DataFrame:
    """A stage's metrics.csv, one row per step (read only when whole: `Stage.metrics`)."""
    return stage.metrics().drop_duplicates("step", keep="last").sort_values("step")

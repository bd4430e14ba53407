"""Multi-pathway deep linear networks with a gating deficit (Kleinman, Achille, Soatto 2024, Fig. 2).

P pathways, each a product of D bias-free maps (8 -> width -> ... -> 15), add their outputs on the
hierarchical task (`tasks.py`); loss 0.5 * summed squared error, full-batch gradient descent. The
deficit gates pathway b: over [onset, onset + length) it gets no gradient while its output still
counts. Measured: every pathway's per-mode singular values K_p,a = (U^T W_p V)_aa, beside the
balanced solution of `dynamics.py`.

Two variants of the authors' code: a feature lesion (`--lesion-mode`, their `gate_sing`: pathway a
loses one mode for good, so pathway b can learn it without competition, Fig. 3) and an elementwise
nonlinearity after every layer (`--nonlinearity tanh|relu`, their Fig. 11-12; no analytical curve).

The sweep is one trunk per depth and seed, the deficit-free run, saving at every onset; each
onset is a branch from that checkpoint with the deficit. Every arm of one depth (seeds, onsets)
trains as one batched program, in float32: gradient descent leaves the analytical curve by its
O(lr) discretisation error (about 1% of the time to learn a mode at lr 0.01), five orders of
magnitude above float32 rounding, and float32 trains twice as fast as float64 here.
"""

from __future__ import annotations

import math
import string
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rewind import seeds as seeding
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.run import identity_hash, open_run
from rewind.linear import dynamics, networks, sweep
from rewind.linear.config import PathwaysConfig, PathwaysStudy, counts
from rewind.linear.tasks import Modes, authors_modes, hierarchical_modes
from rewind.train.device import resolve_device

KIND = "linear-pathways"
DTYPE = torch.float32
LETTERS = string.ascii_lowercase


@dataclass
class Tables:
    results: pd.DataFrame  # one row per arm and mode
    summary: pd.DataFrame  # one row per depth and onset, over seeds
    curves: pd.DataFrame   # per-mode singular values over time, simulated and analytical


def run(study: PathwaysStudy, out: str | Path) -> Tables:
    """Train the sweep into `out` (resuming what is there) and write its tables and figures."""
    train(study, out)
    result = tables(study, out)
    write(result, study, out)
    return result


def tables(study: PathwaysStudy, out: str | Path) -> Tables:
    """The sweep's tables from its archives in `out` (all complete: `train` first)."""
    c = study.pathways
    return _tables(c, Path(out), counts(c.depth, "depth"), counts(c.deficit_start, "deficit_start"),
                   counts(c.seeds, "seeds"), modes_of(c))


def modes_of(c: PathwaysConfig) -> Modes:
    """The task's modes in the basis the init aligns with, K measured in: the authors' with their
    MultipathwayNet init (`hidden_init` full), rewind's own otherwise."""
    return authors_modes() if c.hidden_init == "full" else hierarchical_modes()


def write(result: Tables, study: PathwaysStudy, out: str | Path) -> None:
    """results.csv, summary.csv, curves.csv and (unless --no-figures) the two PNGs in `out`."""
    c, out = study.pathways, Path(out)
    write_text(out / "results.csv", result.results.to_csv(index=False))
    write_text(out / "summary.csv", result.summary.to_csv(index=False))
    write_text(out / "curves.csv", result.curves.to_csv(index=False))
    if study.runtime.figures:
        from rewind.linear import report

        report.pathways_curves(result.curves, result.summary, c, out / "pathways_singular_values.png")
        report.pathways_share(result.summary, out / "pathways_share.png")


def train(study: PathwaysStudy, out: str | Path) -> None:
    """Train every arm of the sweep that `out` does not hold complete (resuming from checkpoints)."""
    c, out = study.pathways, Path(out)
    dev = resolve_device(study.runtime.device)
    progress = sweep.Progress("linear pathways", study.runtime.progress)
    modes = modes_of(c)
    depths, seed_list = counts(c.depth, "depth"), counts(c.seeds, "seeds")
    onsets = counts(c.deficit_start, "deficit_start")
    with ExitStack() as stack:
        stack.enter_context(sweep.threads(study.runtime.threads))
        trunks, branches = {}, []
        for depth in depths:
            for seed in seed_list:
                narrowed = study.with_values(depth=str(depth), seeds=str(seed))
                trunk = trunks[depth, seed] = stack.enter_context(open_run(
                    out / sweep.archive_name(depth, seed), KIND, narrowed.to_dict(), trunk_identity(c, depth, seed),
                    total_iterations=c.steps))
                branches += [sweep.Branch(depth, seed, trunk, "gate", onset, c.steps,
                                          branch_identity(c, trunk_identity(c, depth, seed), onset),
                                          narrowed.with_values(deficit_start=str(onset)).to_dict())
                             for onset in onsets]

        def batch_of(stretches: list[sweep.Stretch]) -> PathwaysBatch:
            return PathwaysBatch([s.weights for s in stretches], [s.info for s in stretches],
                                 [s.length for s in stretches], modes, c, dev)

        def window(b: sweep.Branch, start: int) -> tuple[int, int]:
            return b.point - start, b.point + c.deficit_length - start  # in the steps of the stretch

        sweep.train_trunks(trunks, sorted({*onsets, c.steps}), c.save_every, c.record_every,
                           lambda key: initial_weights(c, key[0], key[1], modes), lambda key: None,
                           batch_of, progress, stack)
        sweep.train_branches(branches, KIND + "-gate", c.save_every, c.record_every, window, batch_of, progress,
                             stack)


def trunk_identity(c: PathwaysConfig, depth: int, seed: int) -> dict:
    """What determines a trunk's weights at every step (its length, onsets and records do not)."""
    identity = {"study": KIND, "task": "hierarchical-8x15", "depth": depth, "seed": seed, "pathways": c.pathways,
                "width": c.width, "lr": c.lr, "init": c.init, "init_scale": c.init_scale, "dtype": "float32"}
    if c.init == "balanced":
        identity["init_noise"] = c.init_noise
        if c.init_draw != "modes":  # the former draw keeps its former identity: its archives still resume
            identity["init_draw"] = c.init_draw
    for name, default in (("hidden_init", "modes"), ("nonlinearity", "none"), ("lesion_mode", 0)):
        if getattr(c, name) != default:  # added later: the former settings keep their identity
            identity[name] = getattr(c, name)
    return identity


def branch_identity(c: PathwaysConfig, trunk: dict, onset: int) -> dict:
    return {"trunk": identity_hash(trunk), "deficit_start": onset, "deficit_length": c.deficit_length,
            "steps": c.steps}


def initial_k(c: PathwaysConfig, seed: int) -> torch.Tensor:
    """The balanced init's per-mode singular values k (float64, 8, largest first), shared by the pathways
    and the depths of one seed: values init_scale * (1 + init_noise * N(0,1)), sorted in descending order.

    `init_draw` "width" is the authors' draw (multipath/analytical_and_sgd_final.py): `width` values, in
    float32 from torch's generator seeded with the seed itself (their `set_seed(seed)`, then
    `torch.randn(width)`), the task's 8 modes taking the largest, so seed S starts where their seed S
    does. "modes" draws only 8, one per mode, from rewind's own stream, so they start lower (seed 0:
    0.0095-0.0113 against 0.0114-0.0134) and the weak modes are learned later."""
    if c.init_draw == "width":
        return _authors_draw(c, seed)[0][:8]
    noise = torch.randn(8, generator=seeding.generator(KIND, "k", seed), dtype=torch.float64)
    return torch.sort(c.init_scale * (1 + c.init_noise * noise), descending=True).values[:8]


def _authors_draw(c: PathwaysConfig, seed: int, basis: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The authors' draws from torch's generator seeded with the seed, in their order: the `width` values
    of k (float64, descending), then (`basis`) their unused width x 8 orthogonal matrix and the width x
    width orthogonal basis R of `hidden_init` full (float64): their first arm's init, exactly."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(c.width, generator=gen).double()
    k = torch.sort(c.init_scale * (1 + c.init_noise * noise), descending=True).values
    if not basis:
        return k, None
    torch.nn.init.orthogonal_(torch.empty(c.width, 8), generator=gen)
    return k, torch.nn.init.orthogonal_(torch.empty(c.width, c.width), generator=gen).double()


def initial_weights(c: PathwaysConfig, depth: int, seed: int, modes: Modes) -> dict[str, torch.Tensor]:
    """{"layer<l>": [P, out, in]}: every pathway alike (balanced), or each drawn apart (gaussian)."""
    gen = seeding.generator(KIND, "init", seed, depth)
    if c.init == "balanced" and c.hidden_init == "full":
        k, R = _authors_draw(c, seed, basis=True)
        per_path = [networks.balanced_shared_basis(modes.U, modes.V, k, depth, R)] * c.pathways
    elif c.init == "balanced":
        layers = networks.balanced_aligned(modes.U, modes.V, initial_k(c, seed), depth, c.width, gen)
        per_path = [layers] * c.pathways
    else:
        sizes = [8] + [c.width] * (depth - 1) + [15]
        std = (c.init_scale / c.width ** ((depth - 1) / 2)) ** (1 / depth)
        per_path = [networks.gaussian(sizes, std, gen) for _ in range(c.pathways)]
    return {f"layer{l}": torch.stack([p[l] for p in per_path]).to(DTYPE) for l in range(depth)}


class PathwaysBatch:
    """Arms of one depth stacked: layer l is [arms * P, out, in]. Arm i stops at `lengths[i]` and has
    pathway b gated over its window (steps counted from its start); with a lesion, pathway a's output
    and gradient lose that mode throughout (K is read from its own output, as the authors read it)."""

    def __init__(self, weights: list[dict[str, torch.Tensor]], windows: list[tuple[int, int] | None],
                 lengths: list[int], modes: Modes, c: PathwaysConfig, dev: torch.device):
        depth = len(weights[0])
        self.chains = networks.Chains([torch.cat([w[f"layer{l}"] for w in weights]).to(dev, DTYPE)
                                       for l in range(depth)], c.nonlinearity)
        self.arms, self.paths, self.lr = len(weights), c.pathways, c.lr
        self.lesion = None
        if c.lesion_mode:  # (I - v v^T) H (I - u u^T) on item x feature outputs H
            m = c.lesion_mode - 1
            self.lesion = tuple((torch.eye(n, dtype=torch.float64) - torch.outer(x[:, m], x[:, m])).to(dev, DTYPE)
                                for n, x in ((8, modes.V), (15, modes.U)))
        self.target = modes.Y.T.contiguous().to(dev, DTYPE)  # item x feature, as the network's output
        self.U, self.V = modes.U.to(dev, DTYPE), modes.V.to(dev, DTYPE)
        self.windows, self.lengths, self.dev = windows, lengths, dev
        self.changes = {0, *lengths, *(t for w in windows if w for t in w)}
        self.learn: torch.Tensor | None = None
        self.columns = ["loss"] + [f"k_{LETTERS[p]}_{m + 1}" for p in range(c.pathways) for m in range(8)]

    def _learn_at(self, tau: int) -> torch.Tensor:
        learn = torch.ones(self.arms, self.paths, 1, 1, dtype=DTYPE)
        for i, (window, length) in enumerate(zip(self.windows, self.lengths)):
            if tau >= length:
                learn[i] = 0.0
            elif window and window[0] <= tau < window[1]:
                learn[i, 1] = 0.0
        return learn.to(self.dev)

    def _lesioned(self, x: torch.Tensor) -> torch.Tensor:
        """x [arms, P, 8, 15] with pathway a's part projected off the lesioned mode."""
        if self.lesion is None:
            return x
        left, right = self.lesion
        return torch.cat([(left @ x[:, :1] @ right), x[:, 1:]], 1)

    def step(self, tau: int) -> None:
        if tau in self.changes:
            self.learn = self._learn_at(tau)
        acts = self.chains.forward()
        out = acts[-1].view(self.arms, self.paths, 8, 15)
        residual = self._lesioned(out).sum(1, keepdim=True) - self.target
        grad = residual * self.learn
        self.chains.descend(acts, self._lesioned(grad).reshape(-1, 8, 15), self.lr)

    def record(self) -> torch.Tensor:
        out = self.chains.forward()[-1].view(self.arms, self.paths, 8, 15)
        loss = 0.5 * (self._lesioned(out).sum(1) - self.target).square().sum((1, 2))
        k = torch.einsum("jm,apij,im->apm", self.U, out, self.V)  # K = U^T W V with W = out^T
        return torch.cat([loss[:, None], k.reshape(self.arms, -1)], 1)

    def weights(self, arm: int) -> dict[str, torch.Tensor]:
        p = self.paths
        return {f"layer{l}": w[arm * p:(arm + 1) * p].clone() for l, w in enumerate(self.chains.layers)}


def _tables(c: PathwaysConfig, out: Path, depths: list[int], onsets: list[int], seed_list: list[int],
            modes: Modes) -> Tables:
    """Final values from the checkpoints, curves from metrics.csv, the balanced solution beside both."""
    S = modes.S.numpy()
    letters = LETTERS[:c.pathways]
    results, curves = [], []
    for depth in depths:
        arms = [(seed, onset) for seed in seed_list for onset in [None, *onsets]]
        sim, finals = [], []
        for seed, onset in arms:
            trunk = runs.read(out / sweep.archive_name(depth, seed))
            trunk_rows = sweep.metrics(trunk.stage("trunk"))
            if onset is None:
                rows, final = trunk_rows[trunk_rows.step <= c.steps], trunk.stage("trunk").load(c.steps)
            else:
                identity = branch_identity(c, trunk_identity(c, depth, seed), onset)
                branch = runs.read(sweep.branch_dir(trunk.root, "gate", onset, identity))
                branch_rows = sweep.metrics(branch.stage("train"))
                rows = pd.concat([trunk_rows[trunk_rows.step < onset], branch_rows])
                final = branch.stage("train").load(c.steps)
            sim.append(rows)
            finals.append(final.tensors)
        k0 = np.stack([_k0(c, seed) for seed, _ in arms])[:, None, :].repeat(c.pathways, 1)
        windows = [None if onset is None else (onset, onset + c.deficit_length) for _, onset in arms]
        if c.nonlinearity == "none":
            ode = dynamics.balanced_trajectories(S, k0, depth, c.lr, list(range(c.steps + 1)), windows,
                                                 lesion=c.lesion_mode - 1 if c.lesion_mode else None)
        else:  # the balanced solution is that of a linear network
            ode = np.full((c.steps + 1, *k0.shape), np.nan)
        measured = PathwaysBatch(finals, [None] * len(arms), [0] * len(arms), modes, c,
                                 torch.device("cpu")).record().numpy()
        for a, ((seed, onset), rows) in enumerate(zip(arms, sim)):
            base = {"depth": depth, "deficit_start": onset,
                    "deficit_length": None if onset is None else c.deficit_length, "seed": seed}
            k_final = measured[a, 1:].reshape(c.pathways, 8)
            for m in range(8):
                row = {**base, "mode": m + 1, "target": S[m]}
                row |= {f"k_{x}": k_final[p, m] for p, x in enumerate(letters)}
                row |= {f"k_{x}_ode": ode[-1, a, p, m] for p, x in enumerate(letters)}
                if c.pathways > 1:
                    row["share_b"] = k_final[1, m] / k_final[:, m].sum()
                row["loss"] = measured[a, 0]
                results.append(row)
            steps = rows.step.to_numpy().astype(int)
            for m in range(8):
                table = {**{k: [v] * len(steps) for k, v in base.items()}, "step": steps, "mode": m + 1,
                         "target": S[m]}
                table |= {f"k_{x}": rows[f"k_{x}_{m + 1}"].to_numpy() for x in letters}
                table |= {f"k_{x}_ode": ode[steps, a, p, m] for p, x in enumerate(letters)}
                curves.append(pd.DataFrame(table))
    results_df = pd.DataFrame(results).astype({"deficit_start": "Int64", "deficit_length": "Int64"})
    return Tables(results_df, _summary(results_df, c), pd.concat(curves, ignore_index=True))


def _k0(c: PathwaysConfig, seed: int) -> np.ndarray:
    """Initial per-mode K of the analytical curve: the balanced init's (gaussian: its nominal scale)."""
    return initial_k(c, seed).numpy() if c.init == "balanced" else np.full(8, c.init_scale)


def _summary(results: pd.DataFrame, c: PathwaysConfig) -> pd.DataFrame:
    """Per depth and onset over seeds: the gated pathway's share of what the network learned (1/P with no
    deficit), the same for the strongest mode, and the largest gap between simulation and the balanced
    solution, in units of each mode's S."""
    letters = LETTERS[:c.pathways]
    df = results.assign(deficit_start=results.deficit_start.fillna(-1))
    df["total"] = df[[f"k_{x}" for x in letters]].sum(axis=1)
    df["gap"] = pd.concat([(df[f"k_{x}"] - df[f"k_{x}_ode"]).abs() / df.target for x in letters], axis=1).max(axis=1)
    rows = []
    for (depth, onset, seed), arm in df.groupby(["depth", "deficit_start", "seed"]):
        strong = arm[arm["mode"] == 1]
        gated = c.pathways > 1
        rows.append({"depth": depth, "deficit_start": onset, "seed": seed,
                     "gated_share": arm.k_b.sum() / arm.total.sum() if gated else math.nan,
                     "strong_mode_share": strong.k_b.iloc[0] / strong.total.iloc[0] if gated else math.nan,
                     "loss": arm.loss.iloc[0], "ode_gap": arm.gap.max()})
    per_seed = pd.DataFrame(rows)
    summary = per_seed.groupby(["depth", "deficit_start"], as_index=False).agg(
        gated_share=("gated_share", "mean"), gated_share_std=("gated_share", "std"),
        strong_mode_share=("strong_mode_share", "mean"), loss=("loss", "mean"), ode_gap=("ode_gap", "max"),
        seeds=("seed", "count"))
    summary["deficit_start"] = summary.deficit_start.where(summary.deficit_start >= 0).astype("Int64")
    summary.insert(2, "deficit_length", summary.deficit_start.notna().map({True: c.deficit_length, False: None}))
    return summary.astype({"deficit_length": "Int64"})

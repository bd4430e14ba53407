"""Matrix completion with a pre-training deficit (Kleinman, Achille, Soatto 2024, Sec. 5, Fig. 5).

A deep linear factorisation H = (W_D ... W_1)^T of D bias-free N x N layers (Gaussian init, each
layer N(0, init_scale^(2/D) / N)) fits a low-rank target on a fixed set of observed entries by
full-batch gradient descent on 0.5 * the mean squared error over them. It trains on task 1 (its
own rank-10 target, or in the subset variant task 2's target on fewer entries) for T_c steps, then
on task 2 (an independent rank-5 target, the same entries) for a fixed budget; the result is the
error over all N^2 entries of task 2. Depth 1 cannot transfer anything (unobserved entries get no
gradient), deeper factorisations lose their low-rank bias once task 1's singular values are
learned: the critical period.

The sweep is one trunk per depth and seed (task 1, saving at every T_c and every `save_every`),
and a task-2 branch from each T_c; all those of one depth train together, in float32 (a step is
a few 100 x 100 matmuls per arm, and float64 would take twice as long).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from rewind import seeds as seeding
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.run import identity_hash, open_run
from rewind.linear import networks, sweep
from rewind.linear.config import CompletionConfig, CompletionStudy, counts
from rewind.linear.tasks import CompletionTasks, completion_tasks

KIND = "linear-completion"
DTYPE = torch.float32


@dataclass
class Tables:
    results: pd.DataFrame  # one row per arm (depth, T_c, seed)
    summary: pd.DataFrame  # one row per depth and T_c, over seeds
    curves: pd.DataFrame   # errors and top singular values over time


def run(study: CompletionStudy, out: str | Path) -> Tables:
    """Train the sweep into `out` (resuming what is there) and write its tables and figures."""
    c, out = study.completion, Path(out)
    c.check_sweep()
    dev = sweep.device(study.runtime.device)
    progress = sweep.Progress("linear completion", study.runtime.progress)
    depths, seed_list = counts(c.depth, "depth"), counts(c.seeds, "seeds")
    points = counts(c.pretrain_steps, "pretrain_steps", allow_k=True)
    tasks = {seed: tasks_of(c, seed) for seed in seed_list}
    with ExitStack() as stack:
        stack.enter_context(sweep.threads(study.runtime.threads))
        trunks, branches = {}, []
        for depth in depths:
            for seed in seed_list:
                narrowed = study.with_values(depth=str(depth), seeds=str(seed))
                identity = trunk_identity(c, depth, seed)
                trunk = trunks[depth, seed] = stack.enter_context(open_run(
                    out / sweep.archive_name(depth, seed), KIND, narrowed.to_dict(), identity,
                    total_iterations=max(points)))
                branches += [sweep.Branch(depth, seed, trunk, "task2", point, point + c.task2_steps,
                                          branch_identity(c, identity, point),
                                          narrowed.with_values(pretrain_steps=str(point)).to_dict())
                             for point in points]

        def batch_of(stretches: list[sweep.Stretch]) -> CompletionBatch:
            return CompletionBatch([s.weights for s in stretches], [s.info for s in stretches],
                                   [s.length for s in stretches], tasks, c, dev)

        sweep.train_trunks(trunks, points, c.save_every, c.record_every,
                           lambda depth, seed: initial_weights(c, depth, seed), lambda depth, seed: (seed, 1),
                           batch_of, progress, stack)
        sweep.train_branches(branches, KIND + "-task2", c.save_every, c.record_every, lambda b, start: (b.seed, 2),
                             batch_of, progress, stack)
    tables = _tables(c, out, depths, points, seed_list, tasks)
    write_text(out / "results.csv", tables.results.to_csv(index=False))
    write_text(out / "summary.csv", tables.summary.to_csv(index=False))
    write_text(out / "curves.csv", tables.curves.to_csv(index=False))
    if study.runtime.figures:
        from rewind.linear import report

        report.completion_error(tables.summary, out / "completion_error.png", relative=c.relative)
        report.completion_singular_values(tables.curves, out / "completion_singular_values.png")
    return tables


def trunk_identity(c: CompletionConfig, depth: int, seed: int) -> dict:
    """What determines a trunk's weights at every step (not the T_c, not task 2's budget)."""
    return {"study": KIND, "size": c.size, "task1_rank": c.task1_rank, "task2_rank": c.task2_rank,
            "observations": c.observations, "subset_observations": c.subset_observations,
            "init_scale": c.init_scale, "lr": c.lr, "depth": depth, "seed": seed, "dtype": "float32"}


def branch_identity(c: CompletionConfig, trunk: dict, point: int) -> dict:
    return {"trunk": identity_hash(trunk), "pretrain_steps": point, "task2_steps": c.task2_steps}


def tasks_of(c: CompletionConfig, seed: int) -> CompletionTasks:
    return completion_tasks(c.size, c.task1_rank, c.task2_rank, c.observations, c.subset_observations, seed)


def initial_weights(c: CompletionConfig, depth: int, seed: int) -> dict[str, torch.Tensor]:
    """{"layer<l>": [N, N]}, entries N(0, init_scale^(2/D) / N): the end-to-end map's Frobenius norm is
    about init_scale * sqrt(N), as in the paper's code."""
    std = c.init_scale ** (1 / depth) / c.size ** 0.5
    layers = networks.gaussian([c.size] * (depth + 1), std, seeding.generator(KIND, "init", seed, depth))
    return {f"layer{l}": w.to(DTYPE) for l, w in enumerate(layers)}


class CompletionBatch:
    """Factorisations of one depth stacked ([arms, N, N] per layer), arm i fitting task `infos[i]` =
    (seed, 1 or 2) on its observed entries; an arm stops at `lengths[i]` steps."""

    def __init__(self, weights: list[dict[str, torch.Tensor]], infos: list[tuple[int, int]], lengths: list[int],
                 tasks: dict[int, CompletionTasks], c: CompletionConfig, dev: torch.device):
        depth = len(weights[0])
        self.chains = networks.Chains([torch.stack([w[f"layer{l}"] for w in weights]).to(dev, DTYPE)
                                       for l in range(depth)])
        pairs = [(tasks[seed].target1, tasks[seed].mask1) if task == 1 else (tasks[seed].target2, tasks[seed].mask2)
                 for seed, task in infos]
        self.target = torch.stack([t for t, _ in pairs]).to(dev, DTYPE)
        self.weight = torch.stack([m / m.sum() for _, m in pairs]).to(dev, DTYPE)  # mean over observed entries
        self.offset = -self.target * self.weight  # dLoss/dH = H * weight + offset: one fused op per step
        self.lr, self.top, self.lengths, self.dev = c.lr, c.singular_values, lengths, dev
        self.changes = set(lengths) if len(set(lengths)) > 1 else set()
        self.alive: torch.Tensor | None = None
        self.columns = ["loss", "error"] + [f"sv_{i + 1}" for i in range(self.top)]

    def step(self, tau: int) -> None:
        if tau in self.changes:
            self.alive = torch.tensor([float(tau < n) for n in self.lengths], dtype=DTYPE).view(-1, 1, 1).to(self.dev)
        acts = self.chains.forward()
        grad = torch.addcmul(self.offset, acts[-1], self.weight)
        if self.alive is not None:
            grad = grad * self.alive
        self.chains.descend(acts, grad, self.lr)

    def record(self) -> torch.Tensor:
        out = self.chains.forward()[-1]
        diff = out - self.target
        loss = 0.5 * (diff.square() * self.weight).sum((1, 2))
        error = diff.square().mean((1, 2))
        sv = torch.linalg.svdvals(out)[:, :self.top]
        return torch.cat([loss[:, None], error[:, None], sv], 1)

    def weights(self, arm: int) -> dict[str, torch.Tensor]:
        return {f"layer{l}": w[arm].clone() for l, w in enumerate(self.chains.layers)}


def _tables(c: CompletionConfig, out: Path, depths: list[int], points: list[int], seed_list: list[int],
            tasks: dict[int, CompletionTasks]) -> Tables:
    """Final errors from the checkpoints; curves from metrics.csv (task 1 before T_c, task 2 after)."""
    results, curves = [], []
    cpu = torch.device("cpu")
    for depth in depths:
        for seed in seed_list:
            trunk = runs.read(out / sweep.archive_name(depth, seed))
            trunk_rows = sweep.metrics(trunk.stage("trunk"))
            identity = trunk_identity(c, depth, seed)
            for point in points:
                branch = runs.read(sweep.branch_dir(trunk.root, "task2", point, branch_identity(c, identity, point)))
                end = point + c.task2_steps
                finals = [branch.stage("train").load(end).tensors, trunk.stage("trunk").load(point).tensors]
                measured = CompletionBatch(finals, [(seed, 2), (seed, 1)], [0, 0], tasks, c, cpu).record().double()
                results.append({"depth": depth, "pretrain_steps": point, "seed": seed,
                                "task2_error": float(measured[0, 1]), "task2_loss": float(measured[0, 0]),
                                "task1_error": float(measured[1, 1]), "task1_loss": float(measured[1, 0])})
                rows = pd.concat([trunk_rows[trunk_rows.step < point].assign(task=1),
                                  sweep.metrics(branch.stage("train")).assign(task=2)])
                rows = rows.drop(columns=[k for k in ("split", "epoch", "acc", "lr") if k in rows])
                curves.append(rows.assign(depth=depth, pretrain_steps=point, seed=seed))
    results_df = with_relative_error(pd.DataFrame(results))
    curves_df = pd.concat(curves, ignore_index=True)
    first = ["depth", "pretrain_steps", "seed", "step", "task"]
    curves_df = curves_df[first + [k for k in curves_df.columns if k not in first]]
    return Tables(results_df, summarize(results_df), curves_df)


def with_relative_error(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with `relative_error` = error(T_c = 0) - error(T_c), task 2's final error of the same depth
    and seed (the authors' plotted quantity, negative where pre-training hurts; empty without a T_c = 0 arm)."""
    at_zero = results.task2_error.where(results.pretrain_steps == 0)
    base = at_zero.groupby([results.depth, results.seed]).transform("first")
    return results.assign(relative_error=base - results.task2_error)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per depth and T_c over the seeds of `results` (a results.csv table): task 2's final error,
    its mean, sample standard deviation, minimum and maximum; the same mean and deviation of
    `relative_error`; task 1's error at the switch (mean); how many seeds. One seed: std empty."""
    return results.groupby(["depth", "pretrain_steps"], as_index=False).agg(
        task2_error=("task2_error", "mean"), task2_error_std=("task2_error", "std"),
        task2_error_min=("task2_error", "min"), task2_error_max=("task2_error", "max"),
        relative_error=("relative_error", "mean"), relative_error_std=("relative_error", "std"),
        task1_error=("task1_error", "mean"), seeds=("seed", "count"))

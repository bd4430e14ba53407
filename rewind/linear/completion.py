"""Matrix completion with a pre-training deficit (Kleinman, Achille, Soatto 2024, Sec. 5, Fig. 5).

A deep linear factorisation H = (W_D ... W_1)^T of D bias-free N x N layers (Gaussian init, each
layer N(0, init_scale^(2/D) / N)) fits a low-rank target on a fixed set of observed entries by
full-batch gradient descent on 0.5 * the mean squared error over them. It trains on task 1 (its
own rank-10 target, or in the subset variant task 2's target on fewer entries) for T_c steps, then
on task 2 (an independent rank-5 target, the same entries) for a fixed budget; the result is the
error over all N^2 entries of task 2. Depth 1 cannot transfer anything (unobserved entries get no
gradient), deeper factorisations lose their low-rank bias once task 1's singular values are
learned: the critical period.

The sweep is one trunk per depth, variant and seed (task 1, saving at every T_c and every
`save_every`), and a task-2 branch from each T_c; all those of one depth train together, in float32
(a step is a few 100 x 100 matmuls per arm, and float64 would take twice as long). A variant is one
value of each swept setting (task 1's rank, the observed entries, the subset, the init scale): every
value is an arm of the same batched program, its archive named by its values of the swept settings
that differ from the defaults (`depth3-rank2-seed0`; one value each: `depth3-seed0`).

`--timing code` trains what the authors' loop trains (its switch comes one step late); `--flow` adds
the analytical flow of the end-to-end map (`flow.py`) beside the first seed's arms.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import torch

from rewind import seeds as seeding
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.manifest import Manifest
from rewind.archive.run import identity_hash, open_run
from rewind.linear import flow, networks, sweep
from rewind.linear.config import CompletionConfig, CompletionStudy, counts
from rewind.linear.tasks import CompletionTasks, completion_tasks
from rewind.train.device import resolve_device

KIND = "linear-completion"
DTYPE = torch.float32
VARIANT_COLUMNS = ["task1_rank", "observations", "subset_observations", "init_scale"]


@dataclass(frozen=True)
class Variant:
    """One value of each swept setting."""

    task1_rank: int
    observations: int
    subset_observations: int
    init_scale: float

    def tag(self, swept: tuple[str, ...] = ("task1_rank", "observations", "subset_observations", "init_scale")) -> str:
        """The archive name's part for the settings of `swept` whose value differs from the default."""
        default = CompletionConfig()
        parts = [f"-{short}{getattr(self, name):g}" for name, short in _SHORT.items()
                 if name in swept and getattr(self, name) != float(getattr(default, name))]
        return "".join(parts)


_SHORT = {"task1_rank": "rank", "observations": "obs", "subset_observations": "subset", "init_scale": "init"}


def variants(c: CompletionConfig) -> list[Variant]:
    return [Variant(*values) for values in itertools.product(*c.axes())]


def timing(c: CompletionConfig, point: int) -> tuple[int, int]:
    """(the trunk step the task-2 branch of T_c = `point` starts from, its length in steps): the paper's
    (T_c, task2_steps), or the authors' loop's (T_c + 1, task2_steps - 2 until the error is read)."""
    return (point, c.task2_steps) if c.timing == "paper" else (point + 1, c.task2_steps - 2)


@dataclass
class Tables:
    results: pd.DataFrame  # one row per arm (depth, variant, T_c, seed)
    summary: pd.DataFrame  # one row per depth, variant and T_c, over seeds
    curves: pd.DataFrame   # errors and top singular values over time


def run(study: CompletionStudy, out: str | Path) -> Tables:
    """Train the sweep into `out` (resuming what is there) and write its tables and figures."""
    train(study, out)
    result = tables(study, out)
    write(result, study, out)
    return result


def write(result: Tables, study: CompletionStudy, out: str | Path) -> None:
    """results.csv, summary.csv, curves.csv and (unless --no-figures) the two PNGs in `out`."""
    out = Path(out)
    write_text(out / "results.csv", result.results.to_csv(index=False))
    write_text(out / "summary.csv", result.summary.to_csv(index=False))
    write_text(out / "curves.csv", result.curves.to_csv(index=False))
    if study.runtime.figures:
        from rewind.linear import report

        report.completion_error(result.summary, out / "completion_error.png", relative=study.completion.relative)
        report.completion_singular_values(result.curves, out / "completion_singular_values.png")


def swept(c: CompletionConfig) -> tuple[str, ...]:
    """The settings this sweep lists more than one value of."""
    return tuple(name for name, values in zip(VARIANT_COLUMNS, c.axes()) if len(values) > 1)


def archive(out: Path, c: CompletionConfig, depth: int, seed: int, variant: Variant) -> Path:
    """The trunk archive of (depth, variant, seed): named by its values that differ from the defaults among
    the settings this sweep lists several values of (`depth3-rank2-seed0`; `depth3-seed0` otherwise, as
    before variants existed). One made under another sweep's name, holding this very run, is used."""
    path = out / sweep.archive_name(depth, seed, variant.tag(swept(c)))
    if path.exists():
        return path
    for other in (variant.tag(), ""):
        found = out / sweep.archive_name(depth, seed, other)
        if (found / runs.MANIFEST).exists() and Manifest.read(found / runs.MANIFEST).data.get(
                "config_hash") == identity_hash(trunk_identity(c, depth, seed, variant)):
            return found
    return path


def train(study: CompletionStudy, out: str | Path) -> None:
    """Train every arm of the sweep that `out` does not hold complete (resuming from checkpoints)."""
    c, out = study.completion, Path(out)
    c.check_sweep()
    dev = resolve_device(study.runtime.device)
    progress = sweep.Progress("linear completion", study.runtime.progress)
    depths, seed_list = counts(c.depth, "depth"), counts(c.seeds, "seeds")
    points = counts(c.pretrain_steps, "pretrain_steps", allow_k=True)
    tasks = all_tasks(c, seed_list)
    with ExitStack() as stack:
        stack.enter_context(sweep.threads(study.runtime.threads))
        trunks, branches = {}, []
        for depth, variant, seed in itertools.product(depths, variants(c), seed_list):
            narrowed = study.with_values(depth=str(depth), seeds=str(seed), **_values(variant))
            identity = trunk_identity(c, depth, seed, variant)
            key = (depth, seed, variant)
            trunk = trunks[key] = stack.enter_context(open_run(
                archive(out, c, depth, seed, variant), KIND, narrowed.to_dict(), identity,
                total_iterations=timing(c, max(points))[0]))
            for point in points:
                start, length = timing(c, point)
                branches.append(sweep.Branch(depth, seed, trunk, "task2", start, start + length,
                                             branch_identity(identity, start, length),
                                             narrowed.with_values(pretrain_steps=str(point)).to_dict(), key))

        def batch_of(stretches: list[sweep.Stretch]) -> CompletionBatch:
            return CompletionBatch([s.weights for s in stretches], [s.info for s in stretches],
                                   [s.length for s in stretches], tasks, c, dev)

        limit = sweep.CPU_BATCH_BYTES if dev.type == "cpu" else 0  # compute-bound: cache-sized batches
        sweep.train_trunks(trunks, [timing(c, p)[0] for p in points], c.save_every, c.record_every,
                           lambda key: initial_weights(c, key[2], key[0], key[1]),
                           lambda key: ((key[1], key[2]), 1), batch_of, progress, stack, limit)
        sweep.train_branches(branches, KIND + "-task2", c.save_every, c.record_every,
                             lambda b, start: ((b.seed, b.key[2]), 2), batch_of, progress, stack, limit)
        if c.flow:
            for (depth, seed, variant), trunk in trunks.items():
                if seed == seed_list[0]:
                    progress(f"depth {depth}: the analytical flow", lambda: flow_curves(
                        c, trunk, depth, variant, tasks[seed, variant], points))


def _values(variant: Variant) -> dict[str, str]:
    return {f.name: str(getattr(variant, f.name)) for f in fields(variant)}


def trunk_identity(c: CompletionConfig, depth: int, seed: int, variant: Variant | None = None) -> dict:
    """What determines a trunk's weights at every step (not the T_c, not task 2's budget)."""
    v = variant or variants(c)[0]
    identity = {"study": KIND, "size": c.size, "task1_rank": v.task1_rank, "task2_rank": c.task2_rank,
                "observations": v.observations, "subset_observations": v.subset_observations,
                "init_scale": v.init_scale, "lr": c.lr, "depth": depth, "seed": seed, "dtype": "float32"}
    if c.init != "gaussian":  # added later: gaussian trunks keep their identity
        identity["init"] = c.init
    return identity


def branch_identity(trunk: dict, start: int, length: int) -> dict:
    """A task-2 branch: from the trunk's step `start`, `length` steps."""
    return {"trunk": identity_hash(trunk), "pretrain_steps": start, "task2_steps": length}


def all_tasks(c: CompletionConfig, seed_list: list[int]) -> dict[tuple[int, Variant], CompletionTasks]:
    made: dict[tuple, CompletionTasks] = {}
    out = {}
    for seed, v in itertools.product(seed_list, variants(c)):
        key = (seed, v.task1_rank, v.observations, v.subset_observations)  # the init scale draws no task
        if key not in made:
            made[key] = completion_tasks(c.size, v.task1_rank, c.task2_rank, v.observations, v.subset_observations,
                                         seed)
        out[seed, v] = made[key]
    return out


def initial_weights(c: CompletionConfig, variant: Variant, depth: int, seed: int) -> dict[str, torch.Tensor]:
    """{"layer<l>": [N, N]} as the authors' `init_model` makes them: gaussian, entries N(0, scale^(2/D) / N)
    (the end-to-end map's Frobenius norm about scale * sqrt(N)); orthogonal, each layer a random
    orthogonal matrix times (scale * sqrt(N))^(1/D); identity, each the identity times scale^(1/D)."""
    n, scale = c.size, variant.init_scale
    gen = seeding.generator(KIND, "init", seed, depth)
    if c.init == "gaussian":
        layers = networks.gaussian([n] * (depth + 1), scale ** (1 / depth) / n ** 0.5, gen)
    elif c.init == "orthogonal":
        layers = [networks.orthonormal_columns(n, n, gen) * (scale * n ** 0.5) ** (1 / depth) for _ in range(depth)]
    else:
        layers = [torch.eye(n, dtype=torch.float64) * scale ** (1 / depth) for _ in range(depth)]
    return {f"layer{l}": w.to(DTYPE) for l, w in enumerate(layers)}


class CompletionBatch:
    """Factorisations of one depth stacked ([arms, N, N] per layer), arm i fitting task `infos[i]` =
    (task key, 1 or 2) on its observed entries; an arm stops at `lengths[i]` steps."""

    def __init__(self, weights: list[dict[str, torch.Tensor]], infos: list[tuple], lengths: list[int],
                 tasks: dict, c: CompletionConfig, dev: torch.device):
        depth = len(weights[0])
        self.chains = networks.Chains([torch.stack([w[f"layer{l}"] for w in weights]).to(dev, DTYPE)
                                       for l in range(depth)])
        pairs = [(tasks[key].target1, tasks[key].mask1) if task == 1 else (tasks[key].target2, tasks[key].mask2)
                 for key, task in infos]
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


def end_to_end(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """H = (W_D ... W_1)^T as the network outputs it (float64)."""
    out = weights["layer0"].double().T
    for l in range(1, len(weights)):
        out = out @ weights[f"layer{l}"].double().T
    return out


def flow_curves(c: CompletionConfig, trunk: runs.Run, depth: int, variant: Variant, task: CompletionTasks,
                points: list[int]) -> pd.DataFrame:
    """The analytical flow from the trunk's init: task 1 to each T_c, then task 2 (as the branches), its
    top singular values every record_every; cached in the trunk's analysis/ folder."""
    settings = {"trunk": trunk.manifest.data["config_hash"], "points": [timing(c, p) for p in points],
                "record_every": c.record_every, "top": c.singular_values, "method": "euler-end-to-end"}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = trunk.root / "trunk" / "analysis" / f"flow-{key}.json"
    try:
        return pd.DataFrame(json.loads(path.read_text())["rows"])
    except (OSError, ValueError, KeyError):  # missing or unreadable: computed (again)
        pass
    W = end_to_end(trunk.stage("trunk").load(0).tensors)
    w1, w2 = (m / m.sum() for m in (task.mask1, task.mask2))
    rows, at = [], 0
    for point in points:
        start, length = timing(c, point)
        W, first = flow.integrate(W, task.target1, w1, depth, c.lr, start - at, c.record_every, c.singular_values, at)
        rows += [{"pretrain_steps": p, "step": step, "task": 1, **_sv(sv)} for step, sv in first
                 for p in points if step < timing(c, p)[0]]
        at = start
        _, second = flow.integrate(W, task.target2, w2, depth, c.lr, length, c.record_every, c.singular_values, start)
        rows += [{"pretrain_steps": point, "step": step, "task": 2, **_sv(sv)} for step, sv in second]
    table = pd.DataFrame(rows).drop_duplicates(["pretrain_steps", "step", "task"])
    write_text(path, json.dumps({"settings": settings, "rows": table.to_dict("records")}))
    return table


def _sv(values: list[float]) -> dict[str, float]:
    return {f"sv_{i + 1}_flow": v for i, v in enumerate(values)}


def tables(study: CompletionStudy, out: str | Path) -> Tables:
    """Final errors from the checkpoints; curves from metrics.csv (task 1 before T_c, task 2 after), and
    the flow's singular values where it was integrated."""
    c, out = study.completion, Path(out)
    depths, seed_list = counts(c.depth, "depth"), counts(c.seeds, "seeds")
    points = counts(c.pretrain_steps, "pretrain_steps", allow_k=True)
    tasks = all_tasks(c, seed_list)
    results, curves = [], []
    cpu = torch.device("cpu")
    for depth, variant, seed in itertools.product(depths, variants(c), seed_list):
        trunk = runs.read(archive(out, c, depth, seed, variant))
        trunk_rows = sweep.metrics(trunk.stage("trunk"))
        identity = trunk_identity(c, depth, seed, variant)
        described = {"depth": depth, **{k: getattr(variant, k) for k in VARIANT_COLUMNS}}
        flowed = flow_curves(c, trunk, depth, variant, tasks[seed, variant], points) \
            if c.flow and seed == seed_list[0] else None
        for point in points:
            start, length = timing(c, point)
            branch = runs.read(sweep.branch_dir(trunk.root, "task2", start, branch_identity(identity, start, length)))
            finals = [branch.stage("train").load(start + length).tensors, trunk.stage("trunk").load(start).tensors]
            measured = CompletionBatch(finals, [((seed, variant), 2), ((seed, variant), 1)], [0, 0], tasks, c,
                                       cpu).record().double()
            results.append({**described, "pretrain_steps": point, "seed": seed,
                            "task2_error": float(measured[0, 1]), "task2_loss": float(measured[0, 0]),
                            "task1_error": float(measured[1, 1]), "task1_loss": float(measured[1, 0])})
            rows = pd.concat([trunk_rows[trunk_rows.step < start].assign(task=1),
                              sweep.metrics(branch.stage("train")).assign(task=2)])
            rows = rows.drop(columns=[k for k in ("split", "epoch", "acc", "lr") if k in rows])
            rows = rows.assign(**described, pretrain_steps=point, seed=seed)
            if flowed is not None:
                rows = rows.merge(flowed[flowed.pretrain_steps == point].drop(columns="pretrain_steps"),
                                  on=["step", "task"], how="left")
            curves.append(rows)
    results_df = with_relative_error(pd.DataFrame(results))
    curves_df = pd.concat(curves, ignore_index=True)
    first = ["depth", *VARIANT_COLUMNS, "pretrain_steps", "seed", "step", "task"]
    curves_df = curves_df[first + [k for k in curves_df.columns if k not in first]]
    return Tables(results_df, summarize(results_df), curves_df)


def _groups(results: pd.DataFrame, *extra: str) -> list[str]:
    return ["depth", *(k for k in VARIANT_COLUMNS if k in results), *extra]


def with_relative_error(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with `relative_error` = error(T_c = 0) - error(T_c), task 2's final error of the same depth,
    variant and seed (the authors' plotted quantity, negative where pre-training hurts; empty without a
    T_c = 0 arm)."""
    at_zero = results.task2_error.where(results.pretrain_steps == 0)
    base = at_zero.groupby([results[k] for k in _groups(results, "seed")]).transform("first")
    return results.assign(relative_error=base - results.task2_error)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One row per depth, variant and T_c over the seeds of `results` (a results.csv table): task 2's final
    error, its mean, sample standard deviation, minimum and maximum; the same mean and deviation of
    `relative_error`; task 1's error at the switch (mean); how many seeds. One seed: std empty."""
    return results.groupby(_groups(results, "pretrain_steps"), as_index=False).agg(
        task2_error=("task2_error", "mean"), task2_error_std=("task2_error", "std"),
        task2_error_min=("task2_error", "min"), task2_error_max=("task2_error", "max"),
        relative_error=("relative_error", "mean"), relative_error_std=("relative_error", "std"),
        task1_error=("task1_error", "mean"), seeds=("seed", "count"))

"""Critical-period sweeps (Achille et al. 2019; Golatkar et al. 2019): when does a deficit hurt for good?

Each arm is named by what the network receives, in order (`--direction`):

- deficit-then-normal (`--switch-at 0,20,40ep`): one trunk trains with the deficit and saves a
  checkpoint at each switch point t; each continuation starts from the trunk's checkpoint t
  (weights, momentum, absolute learning-rate schedule and data order) and trains without it;
  Achille et al.'s deficit removal;
- normal-then-deficit: the trunk is normal and the continuations have the deficit from t on.

For the regularisers (`no-weight-decay`, `no-augmentation`) the deficit is the regulariser off,
so deficit-then-normal is "weight decay off, then on" and normal-then-deficit "on, then off":
Golatkar et al.'s two arms. `order_label` spells each sweep that way in results.csv and the plot.

Window mode (`--window 40ep --starts 0,20ep`): the trunk is normal; each branch starts from the
trunk at s, has the deficit during [s, s+window) and trains on beyond the window.

Each arm trains `--after` beyond its switch point (or window), or, with `--total-steps`, to one
common end, so that every arm trains the same total (as Golatkar et al.). The trunk is trained
once; continuations are branches under it and never retrain it.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rewind import config as cfg
from rewind import launch, steps
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.run import open_run
from rewind.errors import UserError
from rewind.studies import common
from rewind.studies.critical_settings import check_used
from rewind.train import trunk
from rewind.train.replicas import train_segments
from rewind.train.pretrain import schedule_offset
from rewind.train.segment import Segment, restore
from rewind.train.trunk import Setup


@dataclass
class Arm:
    """One continuation: where it starts, its deficit windows, and where it ends."""

    start: int
    deficit: str
    end: int


def _spec(config: cfg.Config) -> str:
    """The deficit to sweep, as KIND or KIND(NAME=VALUE,...), with no window of its own."""
    text = config.train.deficit.strip()
    if not text or ":" in text or "," in text.split(")")[-1]:
        raise UserError("critical-period needs one deficit without a window, e.g. --deficit blur or "
                        "--deficit 'blur(size=4)'; the sweep sets the windows")
    return text


# Regularisers whose deficit is their absence: during it the network receives them off.
REGULARISERS = {"no-weight-decay": "weight decay", "no-augmentation": "augmentation"}


def order_label(config: cfg.Config) -> str:
    """What every arm of this sweep receives, in order, e.g. 'weight decay off-then-on' or 'blur-then-normal'."""
    c, spec = config.critical, _spec(config)
    kind = spec.split("(")[0]
    mode = "window" if c.window.strip() else c.direction
    if kind in REGULARISERS:
        order = {"window": "on-off-on", "deficit-then-normal": "off-then-on", "normal-then-deficit": "on-then-off"}
        return f"{REGULARISERS[kind]} {order[mode]}"
    return {"window": f"normal-{spec}-normal", "deficit-then-normal": f"{spec}-then-normal",
            "normal-then-deficit": f"normal-then-{spec}"}[mode]


def plan_arms(config: cfg.Config, ipe: int) -> tuple[str, int, list[Arm]]:
    """(the trunk's deficit, the trunk's length, the continuations) for this sweep."""
    c, spec = config.critical, _spec(config)
    after = steps.parse(c.after, ipe, "after")
    total = steps.parse(c.total_steps, ipe, "total_steps") if c.total_steps.strip() else None

    def end(last_change: int) -> int:
        if total is None:
            return last_change + after
        if total <= last_change:
            raise UserError(f"--total-steps {c.total_steps} ({total} iterations) leaves no training after the "
                            f"last switch point or window ({last_change} iterations); lengthen it")
        return total

    if c.window.strip():
        width = steps.parse(c.window, ipe, "window")
        starts = steps.points(c.starts, ipe, "starts")
        arms = [Arm(s, f"{spec}:{s}it-{s + width}it", end(s + width)) for s in starts]
        return "", max(starts), arms
    switches = steps.points(c.switch_at, ipe, "switch_at")
    if c.direction == "deficit-then-normal":
        return f"{spec}:0it-", max(switches), [Arm(t, "", end(t)) for t in switches]
    return "", max(switches), [Arm(t, f"{spec}:{t}it-", end(t)) for t in switches]


def run(config: cfg.Config, out: str | Path) -> pd.DataFrame:
    """Train the sweep (all replicates) into `out` in this process; returns the results table (also
    results.csv/png)."""
    return common.run(plan(config, out))


@dataclass
class Layout:
    """One sweep's runs on one trunk: the trunk's config and each arm's config and folder."""

    ipe: int
    trunk: cfg.Config
    arms: list[Arm]
    configs: list[cfg.Config]
    paths: list[Path]
    key: str  # the swept column: switch_at or window_start


def layout(config: cfg.Config, root: Path, train_examples: int) -> Layout:
    ipe = steps.iterations_per_epoch(train_examples, config.train.batch_size)
    # Arms end at iterations of the run; its schedule is longer by a pre-training that takes its place.
    offset = schedule_offset(config, train_examples)
    trunk_deficit, length, arms = plan_arms(config, ipe)
    trunk_config = config.with_values(deficit=trunk_deficit, steps=f"{max(length, 1) + offset}it")
    configs, paths = [], []
    for arm in arms:
        configs.append(config.with_values(deficit=arm.deficit, steps=f"{arm.end + offset}it"))
        identity = _identity(trunk_config, arm)
        paths.append(root / "branches" / f"critical-{arm.start}-{runs.identity_hash(identity)[:8]}")
    key = "window_start" if config.critical.window.strip() else "switch_at"
    return Layout(ipe, trunk_config, arms, configs, paths, key)


def _identity(trunk_config: cfg.Config, arm: Arm) -> dict:
    return {"trunk": trunk_config.hash(), "deficit": arm.deficit, "start": arm.start, "end": arm.end}


def plan(config: cfg.Config, out: str | Path) -> launch.Plan:
    """The sweep as jobs: per replicate the trunk, then one job per continuation (after its trunk)."""
    check_used(config)
    out, r = Path(out), config.study.replicates
    jobs = []
    for i in range(r):
        c, root = cfg.replicate(config, i), out if r == 1 else out / f"rep-{i:02d}"
        size = trunk.train_count(c)
        lay = layout(c, root, size)
        prefix = "" if r == 1 else f"rep-{i:02d}/"
        starts = [a.start for a in lay.arms]
        jobs.append(launch.Job(f"{prefix}trunk", str(root), common.trunk_description(lay.trunk, size, starts),
                               {"kind": "trunk", "replicate": i}, expect=common.expect_trunk(lay.trunk, root)))
        # With --parallel P, P continuations share a job and train stacked on its device.
        todo = list(zip(lay.arms, lay.paths))
        for chunk in common.chunks(todo, c.study.parallel):
            what = "; ".join(f"continuation from {steps.format(a.start, lay.ipe)} to {steps.format(a.end, lay.ipe)}"
                             f" ({a.deficit or 'no deficit'})" for a, _ in chunk)
            starts = [a.start for a, _ in chunk]
            jobs.append(launch.Job(f"{prefix}{lay.key}-{'+'.join(map(str, starts))}", str(chunk[0][1]), what,
                                   {"kind": "arm", "replicate": i, "starts": starts}, after=(f"{prefix}trunk",),
                                   more=tuple(str(p) for _, p in chunk[1:])))
    return launch.Plan("rewind.studies.critical", str(out), config.to_dict(), tuple(jobs), {"out": str(out)})


def execute(plan: launch.Plan, job: launch.Job) -> None:
    config, out = cfg.from_sections(plan.config), Path(plan.out)
    i = job.args["replicate"]
    root = out if config.study.replicates == 1 else out / f"rep-{i:02d}"
    _one(cfg.replicate(config, i), root, only=job.args["starts"] if job.args["kind"] == "arm" else [])


def summarize(plan: launch.Plan) -> pd.DataFrame:
    """Each replicate's arms.csv, then results.csv and results.png, from the complete archive (every run
    is read back); returns the results table."""
    config, out = cfg.from_sections(plan.config), Path(plan.out)
    r = config.study.replicates
    tables = [_one(cfg.replicate(config, i), out if r == 1 else out / f"rep-{i:02d}") for i in range(r)]
    df = pd.concat([t.assign(replicate=i) for i, t in enumerate(tables)])
    key = "window_start" if config.critical.window.strip() else "switch_at"
    summary = df.groupby([key, f"{key}_epoch", "order"], as_index=False).agg(
        final_test_acc_mean=("final_test_acc", "mean"), final_test_acc_std=("final_test_acc", "std"),
        replicates=("replicate", "count"))
    write_text(out / "results.csv", summary.to_csv(index=False))
    _plot(out / "results.png", summary, key, config)
    return summary


def _one(config: cfg.Config, root: Path, only: list[int] | None = None) -> pd.DataFrame:
    """Train the trunk and the arms (`only`: the arms starting there; [] the trunk alone)."""
    data = trunk.load_data(config)
    lay = layout(config, root, len(data.train_y))
    ipe, label = lay.ipe, order_label(config)
    # An arm's job reads a complete trunk without taking its lock (arms of an array start together).
    if not (only and (root / runs.MANIFEST).exists() and runs.read(root).status == "complete"):
        trunk.train(lay.trunk, root, extra_saves=tuple(a.start for a in lay.arms))
    if only == []:
        return pd.DataFrame()
    trunk_stage = runs.read(root).stage("trunk")
    trunk_deficit = lay.trunk.train.deficit
    chosen = [i for i, a in enumerate(lay.arms) if only is None or a.start in only]
    with ExitStack() as stack:
        branches, segments = [], []
        for i in chosen:
            arm, arm_config = lay.arms[i], lay.configs[i]
            setup = Setup.create(arm_config)
            branch = stack.enter_context(open_run(lay.paths[i], "critical", arm_config.to_dict(),
                                                  _identity(lay.trunk, arm)))
            state = setup.state(setup.new_model())
            restore(state, trunk_stage, arm.start)  # weights, momentum and RNG at the start point
            branches.append(branch)
            segments.append(Segment(state, branch.stage("continuation"), arm.start, setup.test,
                                    config.runtime.progress, f"from {steps.format(arm.start, ipe)}"))
        # Continuations share a length, so up to --parallel of them train together.
        results = train_segments(segments, config.study.parallel)
        rows = []
        for i, branch, result in zip(chosen, branches, results):
            arm = lay.arms[i]
            branch.complete(final_test=result.final_test)
            rows.append({lay.key: arm.start, f"{lay.key}_epoch": arm.start / ipe, "order": label,
                         "deficit": arm.deficit or trunk_deficit, "end": arm.end,
                         "final_test_acc": result.final_test["acc"],
                         "best_test_acc": result.best_test_acc})
    df = pd.DataFrame(rows)
    if only is None:
        write_text(root / "arms.csv", df.to_csv(index=False))  # this trunk's arms; results.csv summarises replicates
    return df


def _plot(path: Path, df: pd.DataFrame, key: str, config: cfg.Config) -> None:
    from rewind.analysis.plots import figure, save_png

    fig = figure()
    ax = fig.subplots()
    yerr = 100 * df["final_test_acc_std"].fillna(0)
    ax.errorbar(df[f"{key}_epoch"], 100 * df["final_test_acc_mean"], yerr=yerr, marker="o", capsize=3)
    ax.set_xlabel(_switch_axis(config))
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"critical period: {order_label(config)}")
    ax.grid(True, alpha=0.3)
    save_png(fig, path)


def _switch_axis(config: cfg.Config) -> str:
    """The x axis in what the network receives: when the deficit or regulariser switches."""
    c, spec = config.critical, _spec(config)
    if c.window.strip():
        return f"start of the {spec} window (epoch)"
    first_deficit = c.direction == "deficit-then-normal"
    kind = spec.split("(")[0]
    if kind in REGULARISERS:
        return f"epoch at which {REGULARISERS[kind]} is switched {'on' if first_deficit else 'off'}"
    return f"epoch at which {spec} {'ends' if first_deficit else 'begins'}"

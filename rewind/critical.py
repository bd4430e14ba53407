"""Critical-period sweeps (Achille et al. 2019; Golatkar et al. 2019): when does a deficit hurt for good?

Removal mode (`--removal 0,20,40ep`): one trunk trains with the deficit and saves a checkpoint at
each removal point t; each continuation starts from the trunk's checkpoint t (weights, momentum,
absolute learning-rate schedule and data order) and trains `--after` more without the deficit.
With `--direction add` the trunk is normal and the continuations add the deficit from t on,
which gives the "off, then on" arm of the regularisation-timing study.

Window mode (`--window 40ep --starts 0,20ep`): the trunk is normal; each branch starts from the
trunk at s, has the deficit during [s, s+window) and trains `--after` beyond the window.

The trunk is trained once; continuations are branches under it and never retrain it.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rewind import config as cfg
from rewind import steps
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.run import open_run
from rewind.errors import UserError
from rewind.train import trunk
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment, restore
from rewind.train.trunk import Setup


@dataclass
class Arm:
    """One continuation: where it starts, its deficit windows, and where it ends."""

    start: int
    deficit: str
    end: int


def points(text: str, ipe: int, what: str = "step") -> list[int]:
    """'0,20,40,60,80ep' -> iterations; a bare number takes the unit written last, as people write it."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    unit = next((u for u in ("ep", "it") if parts and parts[-1].endswith(u) and not parts[-1].endswith("epit")), "")
    return sorted({steps.parse(p + unit if p.isdigit() else p, ipe, what) for p in parts})


def _spec(config: cfg.Config) -> str:
    """The deficit to sweep, as KIND or KIND(NAME=VALUE,...), with no window of its own."""
    text = config.train.deficit.strip()
    if not text or ":" in text or "," in text.split(")")[-1]:
        raise UserError("critical-period needs one deficit without a window, e.g. --deficit blur or "
                        "--deficit 'blur(size=4)'; the sweep sets the windows")
    return text


def plan_arms(config: cfg.Config, ipe: int) -> tuple[str, int, list[Arm]]:
    """(the trunk's deficit, the trunk's length, the continuations) for this sweep."""
    c, spec = config.critical, _spec(config)
    after = steps.parse(c.after, ipe, "after")
    if c.window.strip():
        width = steps.parse(c.window, ipe, "window")
        starts = points(c.starts, ipe, "starts")
        arms = [Arm(s, f"{spec}:{s}it-{s + width}it", s + width + after) for s in starts]
        return "", max(starts), arms
    removals = points(c.removal, ipe, "removal")
    if c.direction == "remove":
        return f"{spec}:0it-", max(removals), [Arm(t, "", t + after) for t in removals]
    return "", max(removals), [Arm(t, f"{spec}:{t}it-", t + after) for t in removals]


def run(config: cfg.Config, out: str | Path) -> pd.DataFrame:
    """Train the sweep (all replicates) into `out`; returns the results table (also results.csv/png)."""
    out = Path(out)
    r = config.study.replicates
    tables = [_one(cfg.replicate(config, i), out if r == 1 else out / f"rep-{i:02d}") for i in range(r)]
    df = pd.concat([t.assign(replicate=i) for i, t in enumerate(tables)])
    key = "window_start" if config.critical.window.strip() else "removal"
    summary = df.groupby([key, f"{key}_epoch"], as_index=False).agg(
        final_test_acc_mean=("final_test_acc", "mean"), final_test_acc_std=("final_test_acc", "std"),
        replicates=("replicate", "count"))
    write_text(out / "results.csv", summary.to_csv(index=False))
    _plot(out / "results.png", summary, key, config)
    return summary


def _one(config: cfg.Config, root: Path) -> pd.DataFrame:
    ipe = Setup.create(config.with_values(deficit="")).plan.iterations_per_epoch
    trunk_deficit, length, arms = plan_arms(config, ipe)
    trunk_config = config.with_values(deficit=trunk_deficit, steps=f"{max(length, 1)}it")
    trunk.train(trunk_config, root, extra_saves=tuple(a.start for a in arms))
    trunk_stage = runs.read(root).stage("trunk")
    key = "window_start" if config.critical.window.strip() else "removal"
    with ExitStack() as stack:
        branches, segments = [], []
        for arm in arms:
            arm_config = config.with_values(deficit=arm.deficit, steps=f"{arm.end}it")
            setup = Setup.create(arm_config)
            identity = {"trunk": trunk_config.hash(), "deficit": arm.deficit, "start": arm.start, "end": arm.end}
            path = root / "branches" / f"critical-{arm.start}-{runs.identity_hash(identity)[:8]}"
            branch = stack.enter_context(open_run(path, "critical", arm_config.to_dict(), identity))
            state = setup.state(setup.new_model())
            restore(state, trunk_stage, arm.start)  # weights, momentum and RNG at the start point
            branches.append(branch)
            segments.append(Segment(state, branch.stage("continuation"), arm.start, setup.test,
                                    config.runtime.progress, f"from {steps.format(arm.start, ipe)}"))
        # Continuations share a length, so up to --parallel of them train together.
        results = train_segments(segments, config.study.parallel)
        rows = []
        for arm, branch, result in zip(arms, branches, results):
            branch.update(status="complete", final_test=result.final_test)
            rows.append({key: arm.start, f"{key}_epoch": arm.start / ipe, "deficit": arm.deficit or trunk_deficit,
                         "end": arm.end, "final_test_acc": result.final_test["acc"],
                         "best_test_acc": result.best_test_acc})
    df = pd.DataFrame(rows)
    write_text(root / "arms.csv", df.to_csv(index=False))  # this trunk's arms; results.csv summarises replicates
    return df


def _plot(path: Path, df: pd.DataFrame, key: str, config: cfg.Config) -> None:
    from rewind.analysis.plots import figure, save_png

    fig = figure()
    ax = fig.subplots()
    yerr = 100 * df["final_test_acc_std"].fillna(0)
    ax.errorbar(df[f"{key}_epoch"], 100 * df["final_test_acc_mean"], yerr=yerr, marker="o", capsize=3)
    what = "deficit window start (epoch)" if key == "window_start" else (
        "deficit removal (epoch)" if config.critical.direction == "remove" else "deficit onset (epoch)")
    ax.set_xlabel(what)
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"critical period: {_spec(config)}")
    ax.grid(True, alpha=0.3)
    save_png(fig, path)


"""The plasticity studies' table and figure, read from the arms' archives.

`arms.csv`: one row per arm and replicate; `results.csv`: one row per arm, averaged over replicates
(with `_std` columns and `replicates` when there are several). Columns: `study`, `arm`, the swept
values (`first_steps`, `reset_from`, `lam`, `sigma`, `second_lr`, `first_lr`, `width`, `blocks`,
...), `final_test_acc`, `mean_last_test_acc` (the papers' metric: the mean test accuracy over the
arm's last K evaluations, `last_evals`), `best_test_acc`, `gap_to_scratch` and
`mean_last_gap_to_scratch` (the arm's minus its scratch arm's, of the same setting), `branch`; with
stopping by fit also `stopped_at`, `reached_fit` (second phase) and `first_stopped_at`,
`first_reached_fit` (first phase).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from rewind.analysis.plots import figure, save_png
from rewind.archive import run as runs
from rewind.archive.atomic import write_text

METRICS = ("final_test_acc", "mean_last_test_acc", "best_test_acc", "gap_to_scratch", "mean_last_gap_to_scratch")


def mean_last(test_accs: list[float], k: int) -> float:
    """The mean of the last `k` test accuracies (all of them when there are fewer)."""
    return float(np.mean(test_accs[-k:])) if test_accs else float("nan")


def arm_row(branch: Path, k: int) -> dict:
    """An arm's results from its archive: final and best test accuracy, the mean over its last k
    evaluations, and where it stopped."""
    run = runs.read(branch)
    d = run.manifest.data
    metrics = run.stage("second").metrics()
    tests = metrics[metrics.split == "test"].sort_values("step")
    row = {"final_test_acc": d["final_test"]["acc"], "mean_last_test_acc": mean_last(tests.acc.tolist(), k),
           "best_test_acc": d.get("best_test_acc", float(tests.acc.max()))}
    if d.get("reached_fit") is not None:
        row.update(stopped_at=d["final_step"], reached_fit=d["reached_fit"])
    return row


def write(study: str, arms: list[dict[str, Any]], out: Path, k: int, about: dict[str, Any]) -> pd.DataFrame:
    """arms.csv, results.csv and the study's figure (results.png) in `out`; returns results.csv's table.

    `arms`: one dict per arm: `study`, `arm`, `values` (what it is swept at), `branch` (its folder
    relative to `out`), `baseline` (its scratch arm's branch), `first` (the folder of the first phase
    it starts from; None for a fresh init) and `until_train_acc` (its stopping by fit); `about`: the
    figure's title, the `model`, the first phases' `optimizers` and `warm_fraction`."""
    rows, by_branch = [], {}
    for a in arms:
        row = {"study": a["study"], "arm": a["arm"], **a["values"], **arm_row(out / a["branch"], k)}
        trunk = runs.read(out / a["first"]).manifest.data if a["first"] is not None else None
        if trunk is not None and a["until_train_acc"]:
            row["first_stopped_at"] = trunk.get("final_step", trunk["total_iterations"])
            row["first_reached_fit"] = _reached(out / a["first"], a["until_train_acc"])
        row["branch"] = a["branch"]
        rows.append(row)
        by_branch[a["branch"]] = row
    for a, row in zip(arms, rows):
        base = by_branch[a["baseline"]]
        row["gap_to_scratch"] = row["final_test_acc"] - base["final_test_acc"]
        row["mean_last_gap_to_scratch"] = row["mean_last_test_acc"] - base["mean_last_test_acc"]
    table = _whole_numbers(pd.DataFrame(rows))
    summary = _whole_numbers(summarise(table))
    # The latest study's table in results.csv; every study's kept in studies/ (several may share a trunk).
    for folder, name in ((out, ""), (out / "studies", f"{study}_")):
        write_text(folder / f"{name}arms.csv", table.to_csv(index=False))
        write_text(folder / f"{name}results.csv", summary.to_csv(index=False))
        PLOTS[study](folder / f"{name}results.png", summary, about)
    if study == "arms":  # the four arms' table under its earlier name
        write_text(out / "warm_start.csv", summary.to_csv(index=False))
    return summary


def _whole_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """Integer columns that an empty cell (a scratch arm's `first_steps`, ...) made float, as integers."""
    for c in df.columns:
        values = df[c].dropna()
        if df[c].dtype == float and len(values) and df[c].isna().any() and (values == values.round()).all() \
                and c in ("first_steps", "reset_from", "groups_reset", "width", "blocks", "stages", "replicate"):
            df[c] = df[c].astype("Int64")
    return df


def _reached(trunk_root: Path, threshold: float) -> bool:
    metrics = runs.read(trunk_root).stage("trunk").metrics()
    return bool((metrics[metrics.split == "fit"].acc >= threshold).any())


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: the mean over replicates, `_std` their spread, `replicates` their count."""
    if "replicate" not in table:
        return table.reset_index(drop=True)
    keys = [c for c in table.columns if c not in (*METRICS, "replicate", "branch", "stopped_at", "reached_fit",
                                                    "first_stopped_at", "first_reached_fit")]
    filled = table.assign(**{c: table[c].astype(object).where(table[c].notna(), "") for c in keys})  # NaN keys
    grouped = filled.groupby(keys, sort=False)
    summary = grouped[list(METRICS)].mean()
    std = grouped[list(METRICS)].std().add_suffix("_std")
    summary = pd.concat([summary, std], axis=1)
    summary["replicates"] = grouped.size()
    summary = summary.reset_index()
    for c in keys:
        if (summary[c] == "").any():  # a column with empty cells (the scratch arm's first_steps): numbers again
            values = summary[c].replace("", np.nan)
            try:
                summary[c] = pd.to_numeric(values)
            except (TypeError, ValueError):
                summary[c] = values
    return summary


# Figures in the papers' layouts; y is the papers' metric, the mean over the last K evaluations.
Y = "mean_last_test_acc"


def _err(df: pd.DataFrame):
    return 100 * df[f"{Y}_std"].fillna(0) if f"{Y}_std" in df else None


def _lines_by(ax, rows: pd.DataFrame, by: str, x: str, label: Callable[[Any], str]) -> None:
    """One line of accuracy (with its spread) against `x` per value of `by`."""
    for value, group in rows.groupby(by):
        group = group.sort_values(x)
        ax.errorbar(group[x], 100 * group[Y], yerr=_err(group), marker="o", capsize=3, label=label(value))


def _scratch_line(ax, df: pd.DataFrame, label: str = "scratch") -> None:
    for _, row in df[df.arm == "scratch"].iterrows():
        ax.axhline(100 * row[Y], color="k", linestyle="--", linewidth=1, label=label)
        label = None  # one legend entry


def _finish(ax, fig, path: Path, x: str, title: str) -> None:
    ax.set_xlabel(x)
    ax.set_ylabel("test accuracy, mean of the last evaluations (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def _title(about: dict[str, Any], what: str) -> str:
    return (f"{what}: {about['model']}, {', '.join(about['optimizers'])}, first phase on "
            f"{100 * about['warm_fraction']:g}%")


def _plot_arms(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Ash & Adams's comparison: one bar per arm."""
    fig = figure()
    ax = fig.subplots()
    ax.bar(df.arm, 100 * df[Y], yerr=_err(df), capsize=3, color=["C0", "C1", "C2", "0.5"][:len(df)])
    ax.set_ylim(max(0, 100 * df[Y].min() - 10), min(100, 100 * df[Y].max() + 5))
    ax.set_ylabel("test accuracy, mean of the last evaluations (%)")
    ax.set_title(_title(about, "warm start"))
    ax.grid(True, axis="y", alpha=0.3)
    save_png(fig, path)


def _plot_length(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 2: accuracy after the second phase against the first phase's length."""
    fig = figure()
    ax = fig.subplots()
    if "optimizer" in df:  # one line per optimizer setting, its scratch arm dashed in the same colour
        keys = [k for k in ("optimizer", "optimizer_lr", "optimizer_momentum") if k in df]
        for i, (key, group) in enumerate(df.groupby(keys, sort=False, dropna=False)):
            warm = group[group.arm == "warm"].sort_values("first_steps")
            momentum = key[2] if len(key) > 2 and key[2] == key[2] else None  # NaN: the optimizer takes none
            label = f"{key[0]}, lr {key[1]:g}" + ("" if momentum is None else f", momentum {momentum:g}")
            ax.errorbar(warm.first_epochs, 100 * warm[Y], yerr=_err(warm), marker="o", capsize=3, color=f"C{i}",
                        label=label)
            for _, row in group[group.arm == "scratch"].iterrows():
                ax.axhline(100 * row[Y], color=f"C{i}", linestyle="--", linewidth=1)
    else:
        warm = df[df.arm == "warm"].sort_values("first_steps")
        ax.errorbar(warm.first_epochs, 100 * warm[Y], yerr=_err(warm), marker="o", capsize=3,
                    label=f"warm start ({about['optimizers'][0]})")
        _scratch_line(ax, df)
    ax.set_xscale("symlog", linthresh=1)
    _finish(ax, fig, path, "first-phase length (epochs of the first phase's subset)", _title(about, "length"))


def _plot_reset(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 6: accuracy against the number of top layer groups reset."""
    fig = figure()
    ax = fig.subplots()
    arms = df[df.arm != "scratch"].sort_values("groups_reset")
    ax.errorbar(arms.groups_reset, 100 * arms[Y], yerr=_err(arms), marker="o", capsize=3, label="warm, top groups reset")
    _scratch_line(ax, df)
    ax.set_xticks(arms.groups_reset.tolist())
    _finish(ax, fig, path, "layer groups reset, from the top (0 = warm start)", _title(about, "reset"))


def _plot_shrink(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Ash & Adams Fig. 5-style: accuracy against lambda, one line per sigma."""
    fig = figure()
    ax = fig.subplots()
    _lines_by(ax, df[df.arm == "shrink-perturb"], "sigma", "lam", lambda sigma: f"sigma = {sigma:g}")
    warm = df[df.arm == "warm"]
    if len(warm):
        ax.plot([1.0], 100 * warm[Y].iloc[:1], "k*", markersize=10, label="warm start")
    _scratch_line(ax, df)
    _finish(ax, fig, path, "shrink lambda", _title(about, "shrink-perturb"))


def _plot_lr(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 7: accuracy against the second phase's learning rate, per first-phase rate."""
    fig = figure()
    ax = fig.subplots()
    warm = df[df.arm == "warm"]
    for lr, group in (warm.groupby("first_lr") if "first_lr" in warm else [(None, warm)]):
        group = group.sort_values("second_lr")
        label = "warm start" + (f", first-phase lr {lr:g}" if lr is not None else "")
        ax.errorbar(group.second_lr, 100 * group[Y], yerr=_err(group), marker="o", capsize=3, label=label)
    scratch = df[df.arm == "scratch"].sort_values("second_lr")
    ax.errorbar(scratch.second_lr, 100 * scratch[Y], yerr=_err(scratch), marker="s", linestyle="--", color="k",
                capsize=3, label="scratch")
    ax.set_xscale("log")
    _finish(ax, fig, path, "second-phase learning rate", _title(about, "learning rate"))


def _plot_size(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 5: warm start and scratch against width, one pair of lines per depth."""
    fig = figure()
    ax = fig.subplots()
    for i, (blocks, group) in enumerate(df.groupby("blocks")):
        for arm, style in (("warm", "-o"), ("scratch", "--s")):
            g = group[group.arm == arm].sort_values("width")
            ax.errorbar(g.width, 100 * g[Y], yerr=_err(g), fmt=style, color=f"C{i}", capsize=3,
                        label=f"{arm}, {blocks} blocks per stage" if blocks else arm)
    ax.set_xscale("log", base=2)
    _finish(ax, fig, path, "width (first-stage channels)", _title(about, "size"))


def _plot_transition(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 3: accuracy against the speed of the smooth transition from the subset, drawn as
    what gamma means: p at the end of the run, 1 - gamma^50, each point labelled with its gamma."""
    fig = figure()
    ax = fig.subplots()
    arms = df[df.arm == "transition"].sort_values("gamma", ascending=False)
    p_end = 1 - arms.gamma ** 50
    ax.errorbar(p_end, 100 * arms[Y], yerr=_err(arms), marker="o", capsize=3, label="smooth transition")
    for x, y, g in zip(p_end, 100 * arms[Y], arms.gamma):
        ax.annotate(f"gamma {g:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _scratch_line(ax, df)
    _finish(ax, fig, path, "p at the end of the run, 1 - gamma^50 (p = 1 - gamma^(50 n / N) at step n of N)",
            _title(about, "smooth transition"))


def _plot_stages(path: Path, df: pd.DataFrame, about: dict[str, Any]) -> None:
    """Berariu Fig. 4: accuracy after the final stage against the number of stages, one line per ratio r."""
    fig = figure()
    ax = fig.subplots()
    arms = df[df.arm == "stages"]
    _lines_by(ax, arms, "stage_ratio", "stages", lambda r: f"r = {r:g}")
    _scratch_line(ax, df)
    ax.set_xticks(sorted(arms.stages.unique().tolist()))
    _finish(ax, fig, path, "stages before the final one on all data", _title(about, "stages"))


PLOTS = {"arms": _plot_arms, "length": _plot_length, "reset": _plot_reset, "shrink": _plot_shrink,
         "lr": _plot_lr, "size": _plot_size, "transition": _plot_transition,
         "stages": _plot_stages}

"""IMP results: `results.csv` (one row per level) and `results.png` (test accuracy against density)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rewind.analysis.plots import figure, save_png
from rewind.archive.atomic import write_text
from rewind.archive.manifest import Manifest


def _plot(path: Path, series: list[tuple[str, pd.DataFrame]], title: str) -> None:
    fig = figure()
    ax = fig.subplots()
    for label, df in series:
        x = 100 * df["density"]
        if "final_test_acc_std" in df:
            ax.errorbar(x, 100 * df["final_test_acc_mean"], yerr=100 * df["final_test_acc_std"].fillna(0), marker="o",
                        capsize=3, label=label)
        else:
            ax.plot(x, 100 * df["final_test_acc"], marker="o", label=label)
    ax.set_xscale("log")
    ticks = sorted({round(float(d), 4) for _, df in series for d in 100 * df["density"]}, reverse=True)
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()  # sparser to the right, as in the papers
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_png(fig, path)


def _label(row) -> str:
    label = f"rewind to {row['rewind_iter']}"
    if row["pretrain"] != "none":
        label += f", pretrain {row['pretrain']}"
    for kind in ("control", "perturb"):
        if row.get(kind, "none") != "none":  # `perturb` is missing from tables of older archives
            label += f", {row[kind]}"
    return label


def write_imp_results(branch: Path, rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    write_text(branch / "results.csv", df.to_csv(index=False))
    _plot(branch / "results.png", [(_label(df.iloc[0]), df)], f"IMP: {branch.name}")
    return df


def write_trunk_table(trunk: Path) -> pd.DataFrame:
    """Every IMP branch of a trunk so far (rewind points, controls, perturbations), one row per
    level with its branch, in `trunk/analysis/imp_results.csv`, and one curve per branch in `.png`."""
    # From the branches' manifests (each level's row, as its results.csv has it): no table is read back.
    frames = []
    for manifest in sorted((trunk / "branches").glob("imp-*/manifest.json")):
        levels = Manifest.read(manifest).data.get("levels", {})
        if any(int(n) > 0 for n in levels):
            rows = [levels[n] for n in sorted(levels, key=int)]
            frames.append(pd.DataFrame(rows).assign(branch=manifest.parent.name))
    if not frames:  # no branch has trained a level yet (--levels 0)
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    out = trunk / "trunk" / "analysis"
    write_text(out / "imp_results.csv", df.to_csv(index=False))
    # A curve per branch, named by its folder (k500-1a2b3c4d, k500-random-reinit-5e6f7a8b, ...):
    # the hash tells apart branches that differ in other settings (layerwise, prune fraction, ...).
    groups = sorted(df.groupby("branch"), key=lambda item: (int(item[1].rewind_iter.iloc[0]), item[0]))
    series = [(name.removeprefix("imp-"), group) for name, group in groups]
    _plot(out / "imp_results.png", series, f"IMP branches of {trunk.name}")
    return df


def write_summary(root: Path, tables: list[list[dict]]) -> pd.DataFrame:
    """Mean and spread (std over replicates) of each level's accuracy per rewind point, in
    `root/results.csv`, and one curve per rewind point in `root/results.png`."""
    df = pd.concat([pd.DataFrame(t) for t in tables])
    keys = ["rewind_iter", "pretrain", "control", "perturb", "level"]
    summary = df.groupby(keys, as_index=False).agg(
        density=("density", "mean"),
        remaining=("remaining", "mean"),
        final_test_acc_mean=("final_test_acc", "mean"),
        final_test_acc_std=("final_test_acc", "std"),
        best_test_acc_mean=("best_test_acc", "mean"),
        replicates=("final_test_acc", "count"),
    )
    write_text(root / "results.csv", summary.to_csv(index=False))
    series = [(_label(group.iloc[0]), group) for _, group in summary.groupby(keys[:-1], sort=True)]
    replicates = int(summary.replicates.max())
    _plot(root / "results.png", series, f"IMP: {root.name}" + (f" ({replicates} replicates)" if replicates > 1 else ""))
    return summary

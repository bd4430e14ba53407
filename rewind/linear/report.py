"""Figures of the deep-linear studies, in the paper's layouts (PNG through `rewind.analysis.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib import colormaps

from rewind.analysis.plots import figure, save_png

_NAMES = {3: ("early", "middle", "late")}


def pathways_curves(curves: pd.DataFrame, summary: pd.DataFrame, c, path: Path,
                    notes: dict[int, str] | None = None) -> None:
    """Per-mode singular values of pathway a (solid) and the gated pathway b (dashed) over time, the
    balanced solution in thin black; one row per depth, one column per deficit onset (first seed);
    `notes`: a line added under the title of an onset's panels."""
    depths = sorted(curves.depth.unique())
    onsets = sorted(int(s) for s in curves.deficit_start.dropna().unique()) or [None]
    names = _NAMES.get(len(onsets), [""] * len(onsets))
    seed = curves.seed.min()
    fig = figure(3.4 * len(onsets), 2.8 * len(depths))
    axes = np.atleast_2d(fig.subplots(len(depths), len(onsets), squeeze=False))
    colors = colormaps["tab10"]
    for r, depth in enumerate(depths):
        for col, (onset, name) in enumerate(zip(onsets, names)):
            ax = axes[r, col]
            arm = curves[(curves.depth == depth) & (curves.seed == seed)]
            arm = arm[arm.deficit_start.isna()] if onset is None else arm[arm.deficit_start == onset]
            for mode, rows in arm.groupby("mode"):
                color = colors((mode - 1) % 10)
                ax.plot(rows.step, rows.k_a, color=color, lw=1.4, label="$K_a$" if mode == 1 else None)
                if "k_b" in rows:
                    ax.plot(rows.step, rows.k_b, color=color, lw=1.4, ls="--",
                            label="$K_b$ (gated)" if mode == 1 else None)
                    ax.plot(rows.step, rows.k_b_ode, color="black", lw=0.6, ls=":")
                ax.plot(rows.step, rows.k_a_ode, color="black", lw=0.6, ls=":", label="ODE" if mode == 1 else None)
            if onset is not None:
                ax.axvspan(onset, onset + c.deficit_length, color="gray", alpha=0.15)
            window = "" if onset is None else f", {name} deficit ({onset}-{onset + c.deficit_length})"
            note = (notes or {}).get(onset)
            ax.set_title(f"D={depth}{window}" + (f"\n{note}" if note else ""), fontsize=9)
            ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("path singular value $K_\\alpha$")
            if r == 0 and col == 0:
                ax.legend(fontsize=7, frameon=False)
    save_png(fig, path)


def pathways_share(summary: pd.DataFrame, path: Path) -> None:
    """The gated pathway's share of what the network learned against the deficit onset, per depth."""
    fig = figure()
    ax = fig.subplots()
    gated = summary[summary.deficit_start.notna()]
    for depth, rows in gated.groupby("depth"):
        ax.errorbar(rows.deficit_start.astype(float), rows.gated_share, yerr=rows.gated_share_std.fillna(0),
                    marker="o", capsize=3, label=f"D={depth}")
    free = summary[summary.deficit_start.isna()]
    if len(free):
        ax.axhline(free.gated_share.mean(), color="gray", ls="--", lw=1, label="no deficit")
    ax.set_xlabel("deficit onset (step)")
    ax.set_ylabel("gated pathway's share of $\\sum_\\alpha K_\\alpha$")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


def completion_error(summary: pd.DataFrame, path: Path, relative: bool = False) -> None:
    """Task 2's final error against T_c, one curve per depth: the mean over seeds, error bars one standard
    deviation, a band from the lowest seed to the highest. `relative`: the authors' quantity instead,
    error(T_c = 0) - error(T_c), mean and standard deviation (their plotting script draws one seed's)."""
    fig = figure()
    error_axes(fig.subplots(), summary, relative)
    save_png(fig, path)


def error_axes(ax, summary: pd.DataFrame, relative: bool = False, lines: str = "depth",
               label: Callable[[Any], str] = lambda v: f"D={v}") -> None:
    """`completion_error`'s plot on `ax`, one curve per value of the column `lines`."""
    seeds = int(summary.seeds.max())
    band = seeds > 1 and not relative
    column = "relative_error" if relative else "task2_error"
    for value, rows in summary.groupby(lines):
        line = ax.errorbar(rows.pretrain_steps, rows[column], yerr=rows[f"{column}_std"].fillna(0), marker="o",
                           markersize=3, capsize=3, label=label(value))
        if band:
            ax.fill_between(rows.pretrain_steps, rows.task2_error_min, rows.task2_error_max,
                            color=line[0].get_color(), alpha=0.15, lw=0)
    over = f"mean ± std over {seeds} seeds" + (", band: min-max" if band else "")
    ax.set_xlabel("task-1 steps before the switch ($T_c$)")
    if relative:
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_ylabel("error($T_c$=0) - error($T_c$)")
    else:
        ax.set_ylabel("final task-2 error (MSE, all entries)")
        ax.set_ylim(bottom=0)
    ax.set_title(over if seeds > 1 else "one seed", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def completion_singular_values(curves: pd.DataFrame, path: Path, panels: int = 4) -> None:
    """Top singular values of the end-to-end map over time (task 1, then task 2 from T_c, dashed line);
    one row per depth, columns for up to `panels` T_c spread over the sweep (first seed)."""
    depths = sorted(curves.depth.unique())
    points = sorted(curves.pretrain_steps.unique())
    chosen = [points[i] for i in sorted({round(j * (len(points) - 1) / max(panels - 1, 1))
                                         for j in range(min(panels, len(points)))})]
    seed = curves.seed.min()
    sv = [c for c in curves.columns if c.startswith("sv_")]
    fig = figure(3.2 * len(chosen), 2.6 * len(depths))
    axes = fig.subplots(len(depths), len(chosen), squeeze=False)
    cmap = colormaps["summer"]
    for r, depth in enumerate(depths):
        for col, point in enumerate(chosen):
            ax = axes[r, col]
            arm = curves[(curves.depth == depth) & (curves.seed == seed) & (curves.pretrain_steps == point)]
            for i, name in enumerate(sv):
                ax.plot(arm.step, arm[name], color=cmap(i / max(len(sv), 1)), lw=1)
            ax.axvline(point, color="gray", ls="--", lw=1)
            ax.set_title(f"D={depth}, $T_c$={point}", fontsize=9)
            ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("singular values")
    save_png(fig, path)

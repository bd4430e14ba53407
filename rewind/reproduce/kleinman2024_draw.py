"""The figures of kleinman2024 drawn from their sweeps' tables: the PNG in the paper's layout, the CSV of
the numbers drawn (`series` rewind; with --reference also the known reference values, each with its
`source`), and the headline number for the README. The phase portraits are computed here, from
`rewind.linear.phase` (analytical: nothing trains)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from rewind.analysis.plots import figure, save_png
from rewind.archive.atomic import write_text
from rewind.linear import phase, report
from rewind.reproduce.figure import Drawing
from rewind.reproduce.kleinman2024_references import REFERENCES

# The phase portraits as the authors' multipath/phase-large-init.py and phase-small-init.py compute
# them: S = 10; T states (T - 1 Euler updates); windows (start, end) in their numbering of the states
# from 1, so pathway b is held for the updates start - 1 .. end - 2 (0-based): their early window
# (0, 15) holds it for 14 updates. Large init: 100 initial p per pathway ~ N(0, 0.01) per seed. Small
# init: both pathways from p = 0.005 (their script draws initial values and uses this one); the smoke
# scale starts at 0.05, so that depth 4 learns within 8k updates instead of 1M, and draws 20 large-init
# initial conditions per seed instead of 100.
PHASE_LARGE = {"depths": (2, 5, 8, 13), "inits": {"paper": 100, "smoke": 20}, "std": 0.01, "dt": 0.001,
               "T": 1000, "windows": ((0, 15), (100, 115)), "S": 10.0}
PHASE_SMALL = {"paper": {"depths": (2, 3, 4), "p0": 0.005, "dt": 0.01, "T": 1_000_000,
                         "windows": ((0, 5), (500_000, 510_000)), "S": 10.0, "every": 1000},
               "smoke": {"depths": (2, 3, 4), "p0": 0.05, "dt": 0.01, "T": 8_000,
                         "windows": ((0, 5), (5_000, 5_100)), "S": 10.0, "every": 10}}
DEFICITS = ("early", "late")


def _save(d: Drawing, table: pd.DataFrame, fig: Any = None) -> None:
    """The CSV (with the reference rows when asked) and the PNG (unless already written)."""
    table = table.assign(series="rewind")
    refs = _refs(d)
    if len(refs):
        table = pd.concat([table, refs.assign(series="reference")], ignore_index=True)
    write_text(d.csv, table.to_csv(index=False))
    if fig is not None:
        save_png(fig, d.png)


def _refs(d: Drawing) -> pd.DataFrame:
    """The figure's reference rows, with --reference at paper scale (they are values at the paper's
    settings, which the smoke scale does not use)."""
    return pd.DataFrame(REFERENCES.get(d.figure.name, []) if d.reference and d.scale == "paper" else [])


def _portrait(ax, depth: int, S: float, c: float) -> None:
    """The deficit-free flow field (purple arrows, their direction) and the line K_a + K_b = S (blue)."""
    grid = np.arange(0.01, S + 0.01, 0.5)
    KA, KB = np.meshgrid(grid, grid)
    dka, dkb = phase.flow_field(KA, KB, depth, S, c)
    norm = np.hypot(dka, dkb)
    norm[norm == 0] = 1.0
    ax.quiver(KA, KB, dka / norm, dkb / norm, color="#A23BEC", angles="xy", scale=30, width=0.004, alpha=0.7)
    ax.plot(grid, S - grid, "b-", lw=1)
    ax.set_xlim(0, S)
    ax.set_ylim(0, S)


def _phase_table(K: np.ndarray, depths: np.ndarray, windows: np.ndarray, p0: np.ndarray) -> pd.DataFrame:
    names = {tuple(w): n for w, n in zip(sorted({tuple(w) for w in windows}), DEFICITS)}
    return pd.DataFrame({"depth": depths.astype(int), "deficit": [names[tuple(w)] for w in windows],
                         "window_start": windows[:, 0], "window_end": windows[:, 1], "p0_a": p0[:, 0],
                         "p0_b": p0[:, 1], "k_a": K[-1][:, 0], "k_b": K[-1][:, 1], "share_b": phase.final_share(K)})


def _phase_figure(d: Drawing, K: np.ndarray, table: pd.DataFrame, depths: tuple, S: float, c: float,
                  lw: float) -> str:
    fig = figure(3.0 * len(depths), 6.6)
    axes = fig.subplots(2, len(depths), squeeze=False)
    refs = _refs(d)
    for row, deficit in enumerate(DEFICITS):
        for col, depth in enumerate(depths):
            ax = axes[row, col]
            _portrait(ax, depth, S, c)
            chosen = np.nonzero(((table.depth == depth) & (table.deficit == deficit)).to_numpy())[0]
            ax.plot(K[:, chosen, 0], K[:, chosen, 1], "k", lw=lw)  # every trajectory, one call
            mean = table.share_b.iloc[chosen].mean()
            title = f"D={depth}, {deficit} deficit\nb's share {mean:.3f}"
            if len(refs):
                ref = refs[(refs.depth == depth) & (refs.deficit == deficit)]
                title += f" (authors' code {ref.share_b.iloc[0]:.3f})" if len(ref) else ""
            ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{deficit} deficit\npath B singular value $K_b$")
            ax.set_xlabel("path A singular value $K_a$")
    _save(d, table, fig)
    means = table.groupby(["deficit", "depth"]).share_b.mean()
    count = int(table.groupby(["deficit", "depth"]).size().iloc[0])
    return "; ".join(f"{deficit} deficit: pathway b ends with " + ", ".join(
        f"{means[deficit, depth]:.3f} (D={depth})" for depth in depths) for deficit in DEFICITS) + \
        (f" of the mode (mean over {count} initial conditions)" if count > 1 else " of the mode")


def phase_large(d: Drawing) -> str:
    s = PHASE_LARGE
    inits = s["inits"][d.scale]
    p0 = np.concatenate([np.random.default_rng(seed).normal(0, s["std"], (inits, 2)) for seed in d.seeds])
    combos = [(depth, w) for w in s["windows"] for depth in s["depths"]]
    P0 = np.concatenate([p0] * len(combos))
    depths = np.repeat([c[0] for c in combos], len(p0)).astype(float)
    windows = np.repeat(np.array([c[1] for c in combos]), len(p0), axis=0)
    K = phase.trajectories(P0, depths, s["S"], phase.LARGE, s["dt"], s["T"] - 1, windows - 1)
    return _phase_figure(d, K, _phase_table(K, depths, windows, P0), s["depths"], s["S"], phase.LARGE, 0.4)


def phase_small(d: Drawing) -> str:
    s = PHASE_SMALL[d.scale]
    combos = [(depth, w) for w in s["windows"] for depth in s["depths"]]
    P0 = np.full((len(combos), 2), s["p0"])
    depths = np.array([c[0] for c in combos], dtype=float)
    windows = np.array([c[1] for c in combos])
    K = phase.trajectories(P0, depths, s["S"], phase.SMALL, s["dt"], s["T"] - 1, windows - 1, every=s["every"])
    return _phase_figure(d, K, _phase_table(K, depths, windows, P0), s["depths"], s["S"], phase.SMALL, 2.5)


def _three(curves: pd.DataFrame, depth: int, seed: int) -> pd.DataFrame:
    """The curves of one depth and seed at the early, middle and late onsets (0, 400, 750)."""
    return curves[(curves.depth == depth) & (curves.seed == seed) & curves.deficit_start.isin([0, 400, 750])]


def _shares(summary: pd.DataFrame, depth: int) -> str:
    rows = summary[(summary.depth == depth) & summary.deficit_start.isin([0, 400, 750])]
    spread = lambda r: f" ± {r.gated_share_std:.4f}" if r.seeds > 1 else ""  # noqa: E731
    return ", ".join(f"{name} {r.gated_share:.4f}{spread(r)}" for name, (_, r) in zip(("early", "middle", "late"),
                                                                                    rows.iterrows()))


def _notes(d: Drawing, summary: pd.DataFrame, depth: int) -> dict[int, str]:
    """Per onset: rewind's gated share (mean over seeds) and, with --reference, the authors' code's."""
    refs = _refs(d)
    notes = {}
    for onset in (0, 400, 750):
        row = summary[(summary.depth == depth) & (summary.deficit_start == onset)]
        notes[onset] = f"b's share {row.gated_share.iloc[0]:.4f}" if len(row) else ""
        ref = refs[refs.deficit_start == onset] if len(refs) else refs
        if len(ref):
            notes[onset] += f" (authors' code {ref.gated_share.iloc[0]:.4f})"
    return notes


def pathways_modes(d: Drawing) -> str:
    t, c = d.tables[0], d.studies[0].pathways
    curves = _three(t.curves, 4, min(d.seeds))
    report.pathways_curves(curves, t.summary, c, d.png, _notes(d, t.summary, 4))
    _save(d, curves)
    gap = t.summary[t.summary.depth == 4].ode_gap.max()
    return (f"depth 4, pathway b's share of what the network learned after an early, middle and late deficit: "
            f"{_shares(t.summary, 4)}; simulation within {gap:.1e} S of the analytical curve")


def share(d: Drawing) -> str:
    t = d.tables[0]
    s = t.summary[t.summary.deficit_start.notna()].astype({"deficit_start": int})
    refs = _refs(d)
    fig = figure(11, 4)
    left, right = fig.subplots(1, 2)
    for depth, rows in s.groupby("depth"):
        left.errorbar(rows.deficit_start, rows.gated_share, yerr=rows.gated_share_std.fillna(0), marker="o",
                      markersize=3, capsize=2, label=f"D={depth}")
    for name, onset in zip(("early", "middle", "late"), (0, 400, 750)):
        rows = s[s.deficit_start == onset]
        right.errorbar(rows.depth, rows.gated_share, yerr=rows.gated_share_std.fillna(0), marker="o", capsize=2,
                       label=f"{name} ({onset}-{onset + int(rows.deficit_length.iloc[0])})")
    if len(refs):
        for ax, x in ((left, "deficit_start"), (right, "depth")):
            ax.scatter(refs[x], refs.gated_share, marker="x", color="black", zorder=5, label="authors' code")
    left.set_xlabel("deficit onset (step)")
    right.set_xlabel("depth D")
    for ax in (left, right):
        ax.set_ylabel("gated pathway's share of $\\sum_\\alpha K_\\alpha$")
        ax.set_ylim(0, 0.55)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    _save(d, s, fig)
    shown = sorted({int(s.depth.min()), 4, int(s.depth.max())} & set(s.depth))
    return "; ".join(f"D={depth}: {_shares(t.summary, depth)}" for depth in shown) + \
        " (gated share after an early, middle, late deficit)"


def lesion(d: Drawing) -> str:
    t, control, c = d.tables[0], d.tables[1], d.studies[0].pathways
    seed, mode = min(d.seeds), c.lesion_mode
    arm = t.curves[(t.curves.seed == seed) & (t.curves.deficit_start == 0)]
    fig = figure(11, 4)
    ax, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    colors = colormaps["tab10"]
    for m, rows in arm[arm["mode"] <= 5].groupby("mode"):
        color = colors(m - 1) if m == mode else "gray"
        width = 2.0 if m == mode else 1.0
        ax.plot(rows.step, rows.k_a, color=color, lw=width, label="$K_a$" if m == mode else None)
        ax.plot(rows.step, rows.k_b, color=color, lw=width, ls="--", label="$K_b$ (gated)" if m == mode else None)
        ax.plot(rows.step, rows.k_b_ode, color="black", lw=0.6, ls=":", label="analytical" if m == mode else None)
    ax.axvspan(0, c.deficit_length, color="gray", alpha=0.15)
    ax.set_title(f"D={c.depth}: pathway a lost mode {mode}; pathway b gated 0-{c.deficit_length} "
                 "(modes 1-5; colored: the lesioned one)", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("path singular value $K_\\alpha$")
    ax.legend(fontsize=7)
    finals = []
    for name, table in (("lesion", t.results), ("no lesion", control.results)):
        rows = table[table.deficit_start == 0].groupby("mode", as_index=False)[["k_a", "k_b", "share_b", "target"]]
        finals.append(rows.mean().assign(arm=name))
    finals = pd.concat(finals, ignore_index=True)
    for offset, (name, rows) in zip((-0.2, 0.2), finals.groupby("arm", sort=False)):
        bars.bar(rows["mode"] + offset, rows.share_b, width=0.4, label=name)
    refs = _refs(d)
    if len(refs):
        bars.scatter(refs["mode"] - 0.2, refs.share_b, marker="x", color="black", zorder=5, label="authors' code")
    bars.set_xlabel("mode")
    bars.set_ylabel("pathway b's final share $K_b / (K_a + K_b)$")
    bars.legend(fontsize=7)
    _save(d, finals, fig)
    get = finals.set_index(["arm", "mode"]).share_b
    return (f"after the early deficit pathway b holds {get['lesion', mode]:.3f} of the lesioned mode {mode} "
            f"({get['no lesion', mode]:.3f} without the lesion) and {get['lesion', 1]:.3f} of mode 1: with no "
            "competitor the gated pathway still learns the mode")


def nonlinear(d: Drawing) -> str:
    t, c = d.tables[0], d.studies[0].pathways
    curves = _three(t.curves, 3, min(d.seeds))
    report.pathways_curves(curves, t.summary, c, d.png, _notes(d, t.summary, 3))
    _save(d, t.summary)
    return f"{c.nonlinearity} pathways, depth 3: pathway b's share after an early, middle, late deficit: " + \
        _shares(t.summary, 3)


def _errors(d: Drawing, summary: pd.DataFrame, lines: str, label, relative_too: bool = False) -> None:
    fig = figure(11 if relative_too else 6, 4)
    axes = fig.subplots(1, 2 if relative_too else 1, squeeze=False)[0]
    report.error_axes(axes[0], summary, False, lines, label)
    if relative_too:
        report.error_axes(axes[1], summary, True, lines, label)
    refs = _refs(d)
    if len(refs):
        for ax, column in zip(axes, ("task2_error", "relative_error")):
            if column in refs:
                rows = refs[refs[column].notna()]
                ax.scatter(rows.pretrain_steps, rows[column], marker="x", color="black", zorder=5,
                           label="authors' code")
                ax.legend(fontsize=7)
    _save(d, summary, fig)


def _at(summary: pd.DataFrame, lines: str, label) -> str:
    last = summary.pretrain_steps.max()
    parts = []
    for value, rows in summary.groupby(lines):
        rows = rows.set_index("pretrain_steps")
        spread = f" ± {rows.task2_error_std[last]:.3f}" if rows.seeds[last] > 1 else ""
        parts.append(f"{label(value)} {rows.task2_error[last]:.3f}{spread} (T_c=0: {rows.task2_error[0]:.4f})")
    return f"final task-2 error at T_c={last}: " + "; ".join(parts)


def _depth3(d: Drawing, *tables: int) -> pd.DataFrame:
    return pd.concat([d.tables[i].summary[d.tables[i].summary.depth == 3] for i in tables], ignore_index=True)


def completion_depth(d: Drawing) -> str:
    s = d.tables[0].summary
    _errors(d, s, "depth", lambda v: f"D={v}", relative_too=True)
    flat = s[s.depth == 1].relative_error.abs().max()
    return _at(s, "depth", lambda v: f"D={v}") + f"; depth 1 moves by at most {flat:.4f} over T_c"


def _variant_figure(d: Drawing, column: str, label) -> str:
    s = _depth3(d, *range(len(d.tables))).sort_values([column, "pretrain_steps"])
    _errors(d, s, column, label)
    return "depth 3, " + _at(s, column, label)


def completion_rank(d: Drawing) -> str:
    return _variant_figure(d, "task1_rank", lambda v: f"task-1 rank {v}")


def completion_observations(d: Drawing) -> str:
    return _variant_figure(d, "observations", lambda v: f"{v} entries")


def completion_init(d: Drawing) -> str:
    return _variant_figure(d, "init_scale", lambda v: f"init {v:g}")


def completion_subset(d: Drawing) -> str:
    subset = int(d.tables[0].summary.subset_observations.iloc[0])
    return f"task 1 on {subset} of the entries, " + _variant_figure(d, "observations", lambda v: f"{v} entries")


def completion_subset_depth(d: Drawing) -> str:
    observed = d.tables[1].summary.observations.iloc[0]
    deep = d.tables[0].summary
    s = pd.concat([d.tables[1].summary, deep[(deep.depth == 3) & (deep.observations == observed)]], ignore_index=True)
    _errors(d, s, "depth", lambda v: f"D={v}", relative_too=True)
    return f"task 1 on {int(s.subset_observations.iloc[0])} of {observed} entries, " + \
        _at(s, "depth", lambda v: f"D={v}")


def completion_flow(d: Drawing) -> str:
    t = d.tables[0]
    curves = t.curves[t.curves.seed == min(d.seeds)]
    sv = [c for c in curves.columns if c.startswith("sv_") and not c.endswith("_flow")]
    points = sorted(curves.pretrain_steps.unique())
    fig = figure(3.2 * len(points), 3.0)
    axes = fig.subplots(1, len(points), squeeze=False)[0]
    cmap = colormaps["summer"]
    for ax, point in zip(axes, points):
        arm = curves[curves.pretrain_steps == point]
        for i, name in enumerate(sv):
            ax.plot(arm.step, arm[name], color=cmap(i / len(sv)), lw=1.2, label="gradient descent" if i == 0 else None)
            ax.plot(arm.step, arm[f"{name}_flow"], color="black", ls="--", lw=0.7, label="flow" if i == 0 else None)
        ax.axvline(point, color="blue", ls="--", lw=0.8)
        ax.set_title(f"task 1 for {point} steps", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("singular values of the end-to-end map")
    axes[0].legend(fontsize=7)
    table = curves[["pretrain_steps", "step", "task", *sv, *(f"{n}_flow" for n in sv)]]
    _save(d, table, fig)
    gap = np.nanmax(np.abs(table[sv].to_numpy() - table[[f"{n}_flow" for n in sv]].to_numpy()))
    top = float(table[sv[0]].max())
    return (f"top {len(sv)} singular values, gradient descent against the analytical flow: largest gap {gap:.3f} "
            f"over every step and T_c (the largest singular value reaches {top:.2f})")

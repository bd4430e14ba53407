"""The offline early-phase report of a trunk: a table, TensorBoard scalars and histograms, a figure.

`write_early_phase(run_root)` writes, under `<run_root>/trunk/analysis/`:

- `early_phase.csv`: one row per checkpoint held (see `early_phase_table`);
- `events.out.tfevents.*`: scalars `early/<column>`, weight histograms `early/weights/<layer>`
  (and `early/weights/all`) at a few steps, and a custom-scalars layout grouping the curves;
- `early_phase.png`: accuracy, gradient norm, mean |w|, distance, sign differences and cosine
  similarity against the iteration (symmetric-log x axis, so iteration 0 shows).

Column definitions and normalisations are in `rewind.train.early`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from rewind import seeds
from rewind.analysis.archive import reopen
from rewind.analysis.plots import figure, png_bytes
from rewind.train.early import (STATISTICS, grad_norm, layer_of, load_weights, prunable_weights, to_floats,
                                   weight_stats, whole_first)
from rewind.archive import run as runs
from rewind.archive.atomic import write_bytes, write_text
from rewind.archive.stage import Stage
from rewind.data.loader import Normalizer
from rewind.errors import UserError
from rewind.train.evaluate import evaluate
from rewind.train.trunk import Setup

ANALYSIS = "analysis"
HIST_STEPS = (0, 100, 500, 2000)  # plus the final checkpoint; steps not held are skipped
PHASE_BOUNDARIES = (10, 500, 2000)  # the sub-phases of PROTOCOLS.md section 3, drawn on the figure


def fixed_batch(setup: Setup, examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of training examples, unaugmented and normalised: the `grad_norm` batch."""
    idx = torch.randperm(len(setup.data.train_y), generator=seeds.generator(seed, "grad-batch"))[:examples]
    images = setup.data.train_x[idx].to(setup.device)
    return Normalizer.from_dataset(setup.data, setup.device)(images), setup.data.train_y[idx].to(setup.device)


def logged_tests(stage: Stage) -> dict[int, tuple[float, float]]:
    """step -> (test acc, test loss) as the trainer logged them (in the stage's metrics.csv, read only
    when whole)."""
    if not (stage.dir / "metrics.csv").exists() and not stage.manifest.files.get(stage.metrics_key()):
        return {}
    df = stage.metrics()
    tests = df[df.split == "test"]
    return {int(s): (float(a), float(lo)) for s, a, lo in zip(tests.step, tests.acc, tests.loss)}


def early_phase_table(run_root: str | Path, steps: Iterable[int] | None = None, stage: str = "trunk",
                      grad_examples: int = 256, evaluate_missing: bool = True,
                      overrides: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per checkpoint of `stage` (or per step of `steps`, each of which must be held).

    Columns: `step`, `epoch`, `test_acc` and `test_loss` (from metrics.csv where the trainer
    logged them; elsewhere evaluated from the checkpoint with the same `evaluate`, or left
    empty if `evaluate_missing` is false), then the whole-network statistics in the order of
    `STATISTICS`, then the per-layer ones. `init` is checkpoint 0 and `final` the last
    checkpoint held (the end of the plan once the run is complete). `grad_norm` uses
    `grad_examples` fixed training examples (`fixed_batch`).
    """
    run, setup = reopen(run_root, overrides)
    st = run.stage(stage)
    held, end = st.steps(), final_checkpoint(run, st)
    model = setup.new_model()

    def weights(step: int) -> dict[str, torch.Tensor]:
        checkpoint = st.load(step)
        checkpoint.into(model)  # refused, naming the file, if it does not fit the model
        return checkpoint.tensors

    init, final = weights(0), weights(end)  # the references of `*_init` and `*_final`
    tests = logged_tests(st)
    images, labels = fixed_batch(setup, grad_examples)
    normalize = Normalizer.from_dataset(setup.data, setup.device)
    rows = []
    for step in held if steps is None else sorted(set(steps)):
        sd = init if step == 0 else final if step == end else weights(step)
        acc, loss = tests.get(step, (math.nan, math.nan))
        if step not in tests and evaluate_missing:
            load_weights(model, sd)
            acc, loss = (r := evaluate(model, *setup.test, normalize))["acc"], r["loss"]
        stats = whole_first(weight_stats(sd, init, final) | grad_norm(model, sd, images, labels))
        rows.append({"step": step, "epoch": setup.plan.epoch(step), "test_acc": acc, "test_loss": loss,
                     **to_floats(stats)})
    return pd.DataFrame(rows)


def final_checkpoint(run: runs.Run, stage: Stage) -> int:
    """The step of a stage's final checkpoint: a complete trunk's end (its length, or where stopping by fit
    ended it; UserError when it was deleted), else the last one held."""
    if stage.rel == "trunk" and run.manifest.data.get("kind") == "trunk" and run.status == "complete":
        end = runs.final_step(run)
        if not stage.has(end):
            raise UserError(f"the final checkpoint {stage.checkpoint_dir / f'it{end:08d}.safetensors'} of {run.root} "
                            "is missing (deleted since it was recorded): the `*_final` statistics need it; restore "
                            "it, or run the command that trained the trunk again, which trains the end again")
        return end
    held = stage.steps()
    if not held:
        raise UserError(f"{stage.dir} holds no checkpoint")
    return held[-1]


@dataclass
class EarlyPhaseReport:
    table: pd.DataFrame
    csv: Path
    png: Path
    tensorboard: Path  # the folder holding the event file
    missing: list[Path]  # checkpoints the manifest records but which were deleted: rows left out


def write_early_phase(run_root: str | Path, hist_steps: Iterable[int] = HIST_STEPS, stage: str = "trunk",
                      **table_options: Any) -> EarlyPhaseReport:
    """Write `early_phase.csv`, TensorBoard events and `early_phase.png` into `<stage>/analysis/`.

    Running it again replaces all three. `table_options` go to `early_phase_table`.
    """
    table = early_phase_table(run_root, stage=stage, **table_options)
    folder = Path(run_root) / stage / ANALYSIS
    write_text(folder / "early_phase.csv", table.to_csv(index=False))
    run = runs.read(run_root)
    st = run.stage(stage)
    held, end = st.steps(), final_checkpoint(run, st)
    hist = {s: prunable_weights(st.load(s).tensors) for s in sorted(set(hist_steps) | {end}) if s in held}
    write_tensorboard(folder, table, hist)
    write_bytes(folder / "early_phase.png", figure_png(table))
    return EarlyPhaseReport(table, folder / "early_phase.csv", folder / "early_phase.png", folder, st.missing())


def write_tensorboard(folder: Path, table: pd.DataFrame, hist: dict[int, dict[str, torch.Tensor]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()  # a re-run replaces the report instead of adding a second copy of every curve
    writer = SummaryWriter(str(folder))
    try:
        for row in table.to_dict("records"):
            for key, value in row.items():
                if key not in ("step", "epoch") and not math.isnan(value):
                    writer.add_scalar(f"early/{key}", value, int(row["step"]))
        for step, weights in hist.items():
            for name, w in weights.items():
                writer.add_histogram(f"early/weights/{layer_of(name)}", w.float(), step)
            writer.add_histogram("early/weights/all", torch.cat([w.float().flatten() for w in weights.values()]), step)
        writer.add_custom_scalars(layout())
    finally:
        writer.close()


def layout() -> dict[str, dict[str, list]]:
    """Custom-scalars charts: the whole-network curves side by side, then each statistic by layer."""
    def chart(*regexes: str) -> list:
        return ["Multiline", [f"^early/{r}$" for r in regexes]]

    whole = {"test accuracy": chart("test_acc"), "test loss": chart("test_loss"), "gradient norm": chart("grad_norm"),
             "mean |w|": chart("mean_abs_w"), "L2 distance (raw)": chart("dist_(init|final)_l2"),
             "L2 distance / ||w_ref||": chart("dist_(init|final)_rel"),
             "sign differences": chart("sign_diff_(init|final)"), "cosine similarity": chart("cos_(init|final)"),
             "BatchNorm gamma": chart("bn_gamma_(mean|std)")}
    per_layer = {f"{stat} by layer": chart(f"layer/.*/{stat}") for stat in STATISTICS}
    return {"early phase": whole, "early phase by layer": per_layer}


# (title, ((column, legend label), ...)) of each panel of the figure.
PANELS = (("test accuracy", (("test_acc", None),)), ("gradient norm (fixed batch)", (("grad_norm", None),)),
          ("mean |w|", (("mean_abs_w", None),)),
          ("L2 distance / ||w_ref||", (("dist_init_rel", "from init"), ("dist_final_rel", "from final"))),
          ("sign differences (fraction)", (("sign_diff_init", "vs init"), ("sign_diff_final", "vs final"))),
          ("cosine similarity", (("cos_init", "to init"), ("cos_final", "to final"))))


def figure_png(table: pd.DataFrame) -> bytes:
    """The paper-style panels as PNG bytes (Agg canvas; pyplot's global state is left alone)."""
    fig = figure(4 * len(PANELS), 3.6, dpi=100)
    last = int(table.step.max())
    for ax, (title, columns) in zip(fig.subplots(1, len(PANELS)), PANELS):
        for col, label in columns:
            d = table[["step", col]].dropna()
            ax.plot(d.step, d[col], marker="o", markersize=3, label=label)
        for b in PHASE_BOUNDARIES:
            if b < last:
                ax.axvline(b, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xscale("symlog", linthresh=1)  # log-like, yet iteration 0 has a place
        ax.set_xlim(left=0)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(columns) > 1:
            ax.legend()
    return png_bytes(fig)

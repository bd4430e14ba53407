"""`rewind stats` and `rewind stability`: analyses of an existing trunk archive, written into it.

Both read the trunk's checkpoints and never retrain it. `stats` writes the early-phase report
and the overlap between every pair of IMP masks the archive holds; `stability` trains two
children per rewind point k (a branch per k, resumable) and measures the error barrier on the
linear path between them: the instability curve over k.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from rewind import steps
from rewind.analysis.early_report import write_early_phase
from rewind.analysis.archive import reopen
from rewind.analysis.lmc import child_states, trunk_barrier
from rewind.analysis.overlap import overlap
from rewind.analysis.plots import figure, png_bytes
from rewind.archive import run as runs
from rewind.archive.atomic import write_bytes, write_text
from rewind.archive.lock import FolderLock
from rewind.archive.run import open_run
from rewind.errors import UserError
from rewind.prune import masks as M
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment


def imp_masks(root: Path) -> dict[tuple[str, int], Path]:
    """(branch name, level) -> mask file, for every IMP level the archive holds."""
    out = {}
    for manifest in sorted((root / "branches").glob("imp-*/manifest.json")):
        for key in runs.read(manifest.parent).manifest.files:
            if key.endswith("mask.safetensors"):
                out[(manifest.parent.name, int(key.split("/")[0].removeprefix("level_")))] = manifest.parent / key
    return out


def mask_overlaps(root: Path) -> pd.DataFrame:
    """Jaccard and Hamming overlap of every pair of IMP masks (different rewind points and levels)."""
    found = imp_masks(root)
    loaded = {key: M.load(path) for key, path in found.items()}
    rows = []
    for (a, ma), (b, mb) in itertools.combinations(loaded.items(), 2):
        o = overlap(ma, mb)
        rows.append({"branch_a": a[0], "level_a": a[1], "branch_b": b[0], "level_b": b[1],
                     "jaccard": o["jaccard"], "hamming": o["hamming"]})
    return pd.DataFrame(rows, columns=["branch_a", "level_a", "branch_b", "level_b", "jaccard", "hamming"])


def stats(root: str | Path, **options) -> dict[str, Path]:
    root = Path(root)
    runs.read_trunk(root)
    with FolderLock(root):  # not while a trunk or branch process writes here
        report = write_early_phase(root, **options)
        written = {"early_phase.csv": report.csv, "early_phase.png": report.png, "tensorboard": report.tensorboard}
        overlaps = mask_overlaps(root)
        if len(overlaps):
            path = report.csv.parent / "mask_overlap.csv"
            write_text(path, overlaps.to_csv(index=False))
            written["mask_overlap.csv"] = path
    return written


def stability(root: str | Path, at: str, points: int = 11, order_seeds: tuple[int, int] = (1, 2),
              overrides: dict | None = None, parallel: int = 1) -> pd.DataFrame:
    """Error barrier between two children trained from each k in `at` (e.g. '0,100,500it').

    Every child ends where the trunk ends, so with `parallel` P up to P children train together
    (replica trainer), the children of later k joining as the others reach k."""
    root = Path(root)
    run = runs.read_trunk(root)
    ipe = run.manifest.data["iterations_per_epoch"]
    ks = sorted(set(steps.parse_list(at, ipe, "--at")))
    if not ks or points < 2:
        raise UserError("give --at one or more rewind iterations (e.g. '0,100,500') and --points of at least 2")
    for k in ks:
        if not run.stage("trunk").has(k):
            held = ", ".join(map(str, run.stage("trunk").steps()))
            raise UserError(f"trunk {root} holds no checkpoint at iteration {k}; it holds iterations {held}")
    run, setup = reopen(root, overrides)
    with ExitStack() as stack:
        branches, segments = [], []
        for k in ks:
            identity = {"trunk": run.manifest.data["config_hash"], "k": k, "order_seeds": list(order_seeds)}
            path = root / "branches" / f"stability-k{k}-{runs.identity_hash(identity)[:8]}"
            branch = stack.enter_context(open_run(path, "stability", {"k": k, "points": points}, identity))
            branches.append(branch)
            for seed, state in zip(order_seeds, child_states(run, setup, k, order_seeds)):
                segments.append(Segment(state, branch.stage(f"child_{seed}"), k, setup.test,
                                        setup.config.runtime.progress, f"k={k} child {seed}"))
        results = train_segments(segments, parallel)
        n = len(order_seeds)  # two: the ends of the path
        for i, (k, branch) in enumerate(zip(ks, branches)):
            a, b = (segment.state.model.state_dict() for segment in segments[n * i:n * i + n])
            result = trunk_barrier(setup, a, b, points)
            write_text(branch.root / "interpolation.csv", result.frame().to_csv(index=False))
            branch.update(status="complete", k=k, barrier=result.barrier,
                          child_test_acc=[r.final_test["acc"] for r in results[n * i:n * i + n]])
    # Every k measured on this trunk so far, not only this call's.
    rows = []
    for manifest in sorted((root / "branches").glob("stability-k*/manifest.json")):
        d = runs.read(manifest.parent).manifest.data
        if d.get("status") == "complete":
            rows.append({"k": d["k"], "epoch": d["k"] / ipe, "barrier": d["barrier"],
                         "child_test_acc": d["child_test_acc"]})
    table = pd.DataFrame(rows).sort_values("k").reset_index(drop=True)
    write_text(root / "trunk" / "analysis" / "instability.csv", table.to_csv(index=False))
    write_bytes(root / "trunk" / "analysis" / "instability.png", _instability_png(table))
    return table


def _instability_png(table: pd.DataFrame) -> bytes:
    fig = figure()
    ax = fig.subplots()
    ax.plot(table["k"], 100 * table["barrier"], marker="o")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("rewind iteration k")
    ax.set_ylabel("error barrier (%)")
    ax.set_title("instability: barrier between two children trained from k")
    ax.grid(True, alpha=0.3)
    return png_bytes(fig)

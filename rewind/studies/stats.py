"""`rewind stats`: the early-phase report of an existing trunk archive and the overlap of its IMP masks,
written into it (`trunk/analysis/`); reads the trunk's checkpoints, never retrains it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from rewind import launch
from rewind.analysis.early_report import write_early_phase
from rewind.analysis.overlap import overlap
from rewind.archive import run as runs
from rewind.archive.atomic import write_text
from rewind.archive.lock import FolderLock
from rewind.prune import masks as M
from rewind.studies import common


def imp_masks(root: Path) -> dict[tuple[str, int], tuple[Path, str]]:
    """(branch name, level) -> (mask file, its sha256), for every IMP level the archive holds."""
    out = {}
    for manifest in sorted((root / "branches").glob("imp-*/manifest.json")):
        for key, sha in runs.read(manifest.parent).manifest.files.items():
            if key.endswith("mask.safetensors"):
                level = int(key.split("/")[0].removeprefix("level_"))
                out[(manifest.parent.name, level)] = (manifest.parent / key, sha)
    return out


def mask_overlaps(root: Path) -> pd.DataFrame:
    """Jaccard and Hamming overlap of every pair of IMP masks (different rewind points and levels)."""
    found = imp_masks(root)
    loaded = {key: M.load(path, sha) for key, (path, sha) in found.items()}
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
        overlaps = mask_overlaps(root)  # every mask read (and checked) before anything is written
        report = write_early_phase(root, **options)
        written = {"early_phase.csv": report.csv, "early_phase.png": report.png, "tensorboard": report.tensorboard}
        if report.missing:  # reported, not silently skipped
            written["left out (recorded in the manifest, deleted since)"] = ", ".join(p.name for p in report.missing)
        if len(overlaps):
            path = report.csv.parent / "mask_overlap.csv"
            write_text(path, overlaps.to_csv(index=False))
            written["mask_overlap.csv"] = path
    return written


def plan(root: str | Path, overrides: dict | None = None, launch_settings: dict | None = None) -> launch.Plan:
    root = Path(root)
    runs.read_trunk(root)
    # Complete once a job has written the report with these settings (its own marker, written when it ends).
    job = launch.Job("stats", str(root / "trunk" / "analysis"), "early-phase statistics of every checkpoint, "
                     "mask overlaps", marker=common.marker(root, "stats", overrides or {}))
    return launch.Plan("rewind.studies.stats", str(root), {"launch": launch_settings or {}}, (job,),
                       {"overrides": overrides or {}})


def execute(plan: launch.Plan, job: launch.Job) -> None:
    stats(plan.out, overrides=plan.summary["overrides"])


def summarize(plan: launch.Plan) -> None:
    """The job writes the report itself."""

"""`rewind stability`: linear mode connectivity of an existing trunk archive.

It reads the trunk's checkpoints and never retrains it: it trains two children per rewind point k
(a branch per k and SGD noise, resumable) and measures the error barrier on the linear path
between them, the instability curve over k (`trunk/analysis/instability.csv` and `.png`).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from rewind import config as cfg
from rewind import launch, steps
from rewind.analysis.archive import reopen
from rewind.analysis.lmc import ORDER_SEEDS, POINTS, child_seeds, child_states, trunk_barrier
from rewind.analysis.plots import figure, png_bytes
from rewind.archive import run as runs
from rewind.archive.atomic import write_bytes, write_text
from rewind.archive.run import open_run
from rewind.archive.tables import read_frame
from rewind.errors import UserError
from rewind.studies import common
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment

CURVE = "interpolation.csv"  # a branch's test error along the path, per BatchNorm handling


def _stability_ks(run, root: Path, at: str, points: int) -> list[int]:
    ks = sorted(set(steps.parse_list(at, run.manifest.data["iterations_per_epoch"], "--at")))
    if not ks or points < 2:
        raise UserError("give --at one or more rewind iterations (e.g. '0,100,500') and --points of at least 2")
    for k in ks:
        if not run.stage("trunk").has(k):
            held = ", ".join(map(str, run.stage("trunk").steps()))
            raise UserError(f"trunk {root} holds no checkpoint at iteration {k}; it holds iterations {held}")
    return ks


def _stability_branch(run, root: Path, k: int, noise: str, seeds) -> tuple[Path, dict, dict]:
    """(folder, manifest fields, identity) of the branch holding the two children from k."""
    child_fields = {"noise": noise, "order_seeds": [o for o, _ in seeds], "aug_seeds": [a for _, a in seeds]}
    identity = {"trunk": run.manifest.data["config_hash"], "k": k, "order_seeds": child_fields["order_seeds"]}
    if noise != "order-only":  # order-only children keep the identity they had before the option
        identity["aug_seeds"] = child_fields["aug_seeds"]
    return root / "branches" / f"stability-k{k}-{runs.identity_hash(identity)[:8]}", child_fields, identity


def plan(root: str | Path, at: str, points: int = POINTS, noise: str = "order-and-augmentation",
                   bn: str = "recompute", overrides: dict | None = None, parallel: int = 1,
                   launch_settings: dict | None = None) -> launch.Plan:
    """`stability` as jobs: one per k (a child pair), on the complete trunk at `root`."""
    root = Path(root)
    run = runs.read_trunk(root)
    ks = _stability_ks(run, root, at, points)
    aug_seed = _trunk_aug_seed(run)
    jobs = []
    # With --parallel P, the children of P/2 rewind points share a job and train stacked.
    per_job = max(1, parallel // 2)
    for chunk in common.chunks(ks, per_job):
        paths = [str(_stability_branch(run, root, k, noise, child_seeds(noise, aug_seed))[0]) for k in chunk]
        what = "; ".join(f"two children from k={k} to the trunk's end ({noise}), barrier at {points} points "
                         f"({bn} BatchNorm)" for k in chunk)
        jobs.append(launch.Job(f"stability-k{'+'.join(map(str, chunk))}", paths[0], what, {"ks": chunk},
                               more=tuple(paths[1:])))
    options = {"points": points, "noise": noise, "bn": bn, "overrides": overrides or {}, "parallel": parallel}
    return launch.Plan("rewind.studies.stability", str(root), {"launch": launch_settings or {}}, tuple(jobs),
                       {"at": at, **options})


def execute(plan: launch.Plan, job: launch.Job) -> None:
    options = {k: v for k, v in plan.summary.items() if k != "at"}
    stability(plan.out, ",".join(f"{k}it" for k in job.args["ks"]), **options)


def summarize(plan: launch.Plan) -> None:
    run = runs.read_trunk(plan.out)
    _instability_table(Path(plan.out), run.manifest.data["iterations_per_epoch"],
                       _trunk_aug_seed(run))


def _trunk_aug_seed(run: runs.Run) -> int:
    """The trunk's augmentation seed, from its recorded config (checked as every recorded config is)."""
    return cfg.from_record(run.manifest.data["config"], where=str(run.manifest.path)).train.aug_seed


def stability(root: str | Path, at: str, points: int = POINTS, noise: str = "order-and-augmentation",
              bn: str = "recompute", order_seeds: tuple[int, int] = ORDER_SEEDS, overrides: dict | None = None,
              parallel: int = 1) -> pd.DataFrame:
    """Error barrier between two children trained from each k in `at` (e.g. '0,100,500it').

    The children differ in `noise` (`lmc.child_seeds`); the path is measured at `points` alphas
    with BatchNorm handled as `bn` (`lmc.barrier`). A branch per k and noise holds the children;
    measuring them again (other points or BatchNorm handling) retrains nothing. Every child ends
    where the trunk ends, so with `parallel` P up to P children train together (replica trainer),
    the children of later k joining as the others reach k."""
    root = Path(root)
    run = runs.read_trunk(root)
    ipe = run.manifest.data["iterations_per_epoch"]
    ks = _stability_ks(run, root, at, points)
    run, setup = reopen(root, overrides)
    seeds = child_seeds(noise, setup.config.train.aug_seed, order_seeds)
    with ExitStack() as stack:
        branches, segments = [], []
        for k in ks:
            path, child_fields, identity = _stability_branch(run, root, k, noise, seeds)
            branch = stack.enter_context(open_run(path, "stability", {"k": k, **child_fields}, identity))
            branches.append(branch)
            for (order_seed, _), state in zip(seeds, child_states(run, setup, k, seeds)):
                segments.append(Segment(state, branch.stage(f"child_{order_seed}"), k, setup.test,
                                        setup.config.runtime.progress, f"k={k} child {order_seed}"))
        results = train_segments(segments, parallel)
        n = len(seeds)  # two: the ends of the path
        for i, (k, branch) in enumerate(zip(ks, branches)):
            a, b = (segment.state.model.state_dict() for segment in segments[n * i:n * i + n])
            result = trunk_barrier(setup, a, b, points, bn=bn)
            barriers = _barriers(branch)  # before the curve it may read is written again
            barriers[bn] = {"barrier": result.barrier, "points": points}
            curve = _merged_curve(branch, result)
            branch.manifest.forget(CURVE)
            write_text(branch.root / CURVE, curve)
            branch.complete((CURVE,), k=k, **child_fields, barriers=barriers,
                            child_test_acc=[r.final_test["acc"] for r in results[n * i:n * i + n]])
    return _instability_table(root, ipe, setup.config.train.aug_seed)


def _instability_table(root: Path, ipe: int, trunk_aug_seed: int) -> pd.DataFrame:
    """instability.csv and .png: every k measured on this trunk so far, not only this call's."""
    rows = []
    for manifest in sorted((root / "branches").glob("stability-k*/manifest.json")):
        branch = runs.read(manifest.parent)
        d = branch.manifest.data
        if d.get("status") != "complete":
            continue
        orders = d.get("order_seeds") or d["identity"]["order_seeds"]
        augs = d.get("aug_seeds") or [trunk_aug_seed] * len(orders)  # made before the option
        for mode, measured in _barriers(branch).items():
            rows.append({"k": d["k"], "epoch": d["k"] / ipe, "noise": d.get("noise", "order-only"), "bn": mode,
                         "points": measured["points"], "barrier": measured["barrier"],
                         "child_test_acc": d["child_test_acc"], "order_seed_a": orders[0], "aug_seed_a": augs[0],
                         "order_seed_b": orders[1], "aug_seed_b": augs[1]})
    table = pd.DataFrame(rows).sort_values(["k", "noise", "bn"]).reset_index(drop=True)
    write_text(root / "trunk" / "analysis" / "instability.csv", table.to_csv(index=False))
    write_bytes(root / "trunk" / "analysis" / "instability.png", _instability_png(table))
    return table


def _barriers(branch: runs.Run) -> dict[str, dict]:
    """BatchNorm handling -> {barrier, points} measured for a stability branch (one made before the
    option holds one barrier, with statistics recomputed, and its curve)."""
    manifest = branch.manifest.data
    if "barriers" in manifest:
        return dict(manifest["barriers"])
    if "barrier" not in manifest:
        return {}
    curve = _curve(branch)
    points = int((curve.bn == "recompute").sum()) if "bn" in curve.columns else len(curve)
    return {"recompute": {"barrier": manifest["barrier"], "points": points}}


def _curve(branch: runs.Run) -> pd.DataFrame:
    """interpolation.csv, read only when whole."""
    return read_frame(branch.root / CURVE, branch.table_sha(CURVE), "delete it and run the same `rewind stability` "
                      "command again (once per --bn measured) to write it again", ("alpha",))


def _merged_curve(branch: runs.Run, result) -> str:
    """interpolation.csv with this measurement's rows replacing earlier ones of its BatchNorm handling."""
    curve = result.frame()
    if (branch.root / CURVE).exists():
        old = _curve(branch)
        if "bn" not in old.columns:
            old.insert(0, "bn", "recompute")
        curve = pd.concat([old[old.bn != result.bn], curve]).sort_values(["bn", "alpha"], kind="stable")
    return curve.to_csv(index=False)


def _instability_png(table: pd.DataFrame) -> bytes:
    fig = figure()
    ax = fig.subplots()
    for (noise, bn), curve in table.groupby(["noise", "bn"]):
        ax.plot(curve["k"], 100 * curve["barrier"], marker="o", label=f"noise: {noise}, BatchNorm: {bn}")
    ax.legend()
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("rewind iteration k")
    ax.set_ylabel("error barrier (%)")
    ax.set_title("instability: barrier between two children trained from k")
    ax.grid(True, alpha=0.3)
    return png_bytes(fig)

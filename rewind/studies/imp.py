"""The IMP engine: prune, rewind to iteration k of the trunk, retrain; repeat per level.

Level 0 is the trunk. Level L trains the mask of density 0.8^L from the trunk's weights at
iteration k to the end of the same schedule (learning rate and data order resume at k). A branch
lives under the trunk's archive (`branches/imp-k<K>-<hash>/`) and never retrains the trunk.
Controls (random re-init, random pruning) use the masks of the plain branch with the same
settings, which is trained first if it does not exist yet.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from rewind import config as cfg
from rewind import launch, seeds, steps
from rewind.archive import run as runs
from rewind.archive.run import Run, open_run
from rewind.errors import UserError
from rewind.prune import magnitude
from rewind.prune.perturb import perturb
from rewind.prune import masks as M
from rewind.studies import common, imp_settings
from rewind.studies.imp_settings import branch_identity, plain
from rewind.studies.imp_trunk import trunk_config
from rewind.train import trunk
from rewind.train.optim import load_masked
from rewind.train.pretrain import schedule_offset
from rewind.train.schedule import Plan
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment, SegmentResult
from rewind.train.trunk import Setup


@dataclass
class ImpResult:
    trunk: Path
    branch: Path
    rows: list[dict]


def run(config: cfg.Config, out: str | Path | None = None, from_: str | Path | None = None,
        given: set[str] | None = None) -> list[ImpResult]:
    """IMP on the trunk at `from_` (never retrained), or on a trunk trained first into `out`.

    `rewind_iter` may list several k ('0,100,500'): one branch per k, all on the same trunk.
    With `replicates` R > 1 and `out`, R trunks are trained into `out/rep-00` ... . With
    `parallel` P > 1, up to P trainings of one level run together through the replica trainer
    (replicate trunks, then each level's branches: replicates, rewind points, a control beside
    its plain branch). `given`: the field names the user set (file or options), which `from_`
    checks against the trunk; by default, every field that is not at its default. Replicates are summarised per level and k (mean and spread) in
    `out/results.csv`; every IMP branch of a trunk is listed in its `trunk/analysis/imp_results.csv`.

    Its own path, not `common.run(plan(...))`: inline, it stacks what the plan's jobs keep apart
    (replicate trunks, a control beside its plain branch), as it always has, so its results stay
    what they were; the executors train `plan`'s jobs.
    """
    from rewind.analysis.results import write_summary, write_trunk_table

    imp_settings.check_used(config)
    if (out is None) == (from_ is None):
        raise UserError("give either --out runs/NAME (train a trunk, then prune) or --from runs/TRUNK (reuse one)")
    replicates, parallel = config.study.replicates, config.study.parallel
    if from_ is not None:
        if replicates > 1:
            raise UserError("--replicates needs --out: each replicate trains its own trunk")
        results = _group([trunk_config(config, Path(from_), given)], [Path(from_)], reuse=True)
    elif replicates == 1:
        results = _group([config], [Path(out)], reuse=False)
    else:
        results = []
        for group in common.chunks(range(replicates), parallel):
            results += _group([cfg.replicate(config, r) for r in group], [Path(out) / f"rep-{r:02d}" for r in group],
                              reuse=False)
    if replicates > 1:
        write_summary(Path(out), [r.rows for r in results])
    for root in dict.fromkeys(r.trunk for r in results):
        write_trunk_table(root)
    return results


def plan(config: cfg.Config, out: str | Path | None = None, from_: str | Path | None = None,
         given: set[str] | None = None) -> launch.Plan:
    """The runs `run` trains, as jobs: a trunk per replicate (with `out`), then per trunk one IMP
    branch per rewind point (its levels in order inside the job), a control or perturbation after
    the plain branch whose masks it reuses. Reads nothing but manifests."""
    imp_settings.check_used(config)
    if (out is None) == (from_ is None):
        raise UserError("give either --out runs/NAME (train a trunk, then prune) or --from runs/TRUNK (reuse one)")
    if from_ is not None:
        if config.study.replicates > 1:
            raise UserError("--replicates needs --out: each replicate trains its own trunk")
        config = trunk_config(config, Path(from_), given)
    r = config.study.replicates
    roots = [Path(from_)] if from_ is not None else [Path(out)] if r == 1 else \
        [Path(out) / f"rep-{i:02d}" for i in range(r)]
    jobs = []
    for i, root in enumerate(roots):
        c = cfg.replicate(config, i)
        if from_ is not None:  # the trunk says how long it is
            d = runs.read(root).manifest.data
            ipe, total = d["iterations_per_epoch"], d["total_iterations"]
            ks = rewind_points(c, ipe, total)
            _check_held(c, root, ks)
        else:
            size = trunk.train_count(c)
            tplan = Plan.from_config(c.train, size, offset=schedule_offset(c, size))
            ipe, total = tplan.iterations_per_epoch, tplan.total
            ks = rewind_points(c, ipe, total)
        prefix = "" if len(roots) == 1 else f"rep-{i:02d}/"
        trunk_job = []
        if from_ is None:
            jobs.append(launch.Job(f"{prefix}trunk", str(root), common.trunk_description(c, size, ks),
                                   {"kind": "trunk", "replicate": i, "root": str(root)}, expect=common.expect_trunk(c, root)))
            trunk_job = [jobs[-1].name]
        # With --parallel P, P rewind points share a job and train stacked on its device.
        for chunk in common.chunks(ks, c.study.parallel):
            plain_c = plain(c)
            names = [f"{prefix}imp-k{'+'.join(map(str, chunk))}"]
            variants = [plain_c] if plain_c == c else [plain_c, c]
            if plain_c != c:
                names.append(names[0] + "".join(f"-{v}" for v in (c.imp.control, c.imp.perturb) if v != "none"))
            for j, (name, v) in enumerate(zip(names, variants)):
                kind = "".join(f" {x}" for x in (v.imp.control, v.imp.perturb) if x != "none")
                what = "; ".join(f"IMP branch{kind}, rewind to k={k}, {c.imp.levels} levels of {total - k} it "
                                 f"({steps.format(total - k, ipe)})" for k in chunk)
                paths = [str(branch_path(v, root, k)) for k in chunk]
                jobs.append(launch.Job(name, paths[0], what,
                                       {"kind": "branch", "replicate": i, "root": str(root), "ks": chunk,
                                        "control": v != plain_c},
                                       after=tuple(trunk_job + names[:j]), levels=c.imp.levels,
                                       more=tuple(paths[1:])))
    summary = {"out": str(out) if out is not None else None, "from": str(from_) if from_ is not None else None}
    return launch.Plan("rewind.studies.imp", str(out if out is not None else from_), config.to_dict(), tuple(jobs), summary)


def trunk_plan(config: cfg.Config, out: str | Path) -> launch.Plan:
    """`rewind train` as a plan: one job, the trunk."""
    size = trunk.train_count(config)
    job = launch.Job("trunk", str(out), common.trunk_description(config, size), {"kind": "trunk", "replicate": 0,
                                                                           "root": str(out)},
                     expect=common.expect_trunk(config, out))
    return launch.Plan("rewind.studies.imp", str(out), config.to_dict(), (job,), {"trunk_only": True})


def execute(plan: launch.Plan, job: launch.Job) -> None:
    """Train one job of an IMP plan in this process."""
    c = cfg.replicate(cfg.from_sections(plan.config), job.args["replicate"])
    root = Path(job.args["root"])
    if job.args["kind"] == "trunk":
        size = trunk.train_count(c)
        tplan = Plan.from_config(c.train, size, offset=schedule_offset(c, size))
        extra = () if plan.summary.get("trunk_only") else tuple(rewind_points(c, tplan.iterations_per_epoch,
                                                                                tplan.total))
        trunk.train_replicas([c], [root], extra_saves=extra)
        return
    branch = (c if job.args["control"] else plain(c)).with_values(rewind_iter=",".join(f"{k}it"
                                                                                         for k in job.args["ks"]))
    _group([branch], [root], reuse=True)


def summarize(plan: launch.Plan) -> None:
    """The study's tables and plots from the complete archive (trains nothing)."""
    if plan.summary.get("trunk_only"):
        return
    s = plan.summary
    run(cfg.from_sections(plan.config), out=s["out"], from_=s["from"], given=set())


def rewind_points(config: cfg.Config, ipe: int, total: int) -> list[int]:
    """The rewind points in iterations, each before the end of training (`total` iterations)."""
    ks = sorted(set(steps.parse_list(config.imp.rewind_iter, ipe, "rewind point")))
    if ks[-1] >= total:
        raise UserError(f"rewind point {ks[-1]} is not before the end of training ({total} iterations)")
    return ks


def _group(configs: list[cfg.Config], roots: list[Path], reuse: bool) -> list[ImpResult]:
    """IMP for trunks that train together (same schedule, different seeds), at every rewind point."""
    setups = [Setup.create(c) for c in configs]
    ks = rewind_points(configs[0], setups[0].plan.iterations_per_epoch, setups[0].plan.total)
    if not reuse:
        trunk.train_replicas(configs, roots, extra_saves=tuple(ks))
    for c, root in zip(configs, roots):
        _check_held(c, root, ks)
    # Each branch records its own k.
    runs_at = [(c.with_values(rewind_iter=f"{k}it"), s, r, k) for k in ks for c, s, r in zip(configs, setups, roots)]
    branches = [Branch(*a) for a in runs_at]
    parallel = configs[0].study.parallel
    if plain(configs[0]) == configs[0]:
        return _train_branches(branches, parallel)
    # Controls and perturbations reuse the plain branch's masks level by level (a complete plain
    # branch is only read back). All of a level's masks are made before it trains, plain ones
    # first, so a control may train beside its plain branch.
    plains = [Branch(plain(c), s, r, k) for c, s, r, k in runs_at]
    return _train_branches(plains + branches, parallel)[len(plains):]


def _train_branches(branches: list["Branch"], parallel: int) -> list[ImpResult]:
    """Every level of every branch; up to `parallel` branches of one level train together."""
    with ExitStack() as stack:
        for b in branches:
            stack.enter_context(b)
        for level in range(1, branches[0].config.imp.levels + 1):
            segments = [b.segment(level) for b in branches]
            results = train_segments(segments, parallel)
            for b, segment, result in zip(branches, segments, results):
                b.finish(level, segment, result)
        for b in branches:
            b.run.complete()
    return [b.result() for b in branches]


def _check_held(config: cfg.Config, root: Path, ks: list[int]) -> None:
    held = runs.read(root).stage("trunk")
    for k in ks:
        if not held.has(k, with_state=config.imp.rewind_optimizer):
            raise UserError(f"trunk {root} holds no checkpoint at iteration {k}; it holds iterations "
                            f"{', '.join(map(str, held.steps()))}. Choose from those with --rewind-iter, "
                            f"or train a trunk with --save-at {k}")


def branch_path(config: cfg.Config, root: Path, k: int) -> Path:
    identity = branch_identity(config, k)
    kind = "".join(f"-{v}" for v in (config.imp.control, config.imp.perturb) if v != "none")
    return root / "branches" / f"imp-k{k}{kind}-{runs.identity_hash(identity)[:8]}"


def _level_plan(plan: Plan, k: int, save_every: int) -> Plan:
    """Levels keep the rewind point, the multiples of `save_every` after it, and the end: enough to
    resume. The grid is absolute, so the branches of a rewind-point sweep share resume points."""
    grid = set(range(-(-k // save_every) * save_every, plan.total, save_every)) if save_every else set()
    saves = {k, plan.total} | grid
    return dataclasses.replace(plan, save_steps=frozenset(saves))


class Branch:
    """One IMP branch of a trunk while it trains: its lock, its masks, one segment per level."""

    def __init__(self, config: cfg.Config, setup: Setup, root: Path, k: int):
        self.config, self.setup, self.root, self.k = config, setup, root, k
        self.path = branch_path(config, root, k)
        self.plain = branch_path(plain(config), root, k) if plain(config) != config else None
        self.plan = _level_plan(setup.plan, k, steps.parse(config.train.save_every, setup.plan.iterations_per_epoch))

    def __enter__(self) -> "Branch":
        c, k = self.config, self.k
        self._ctx = open_run(self.path, "imp", c.to_dict(), branch_identity(c, k), trunk=str(self.root), rewind_iter=k)
        self.run = self._ctx.__enter__()
        try:
            trunk_run = runs.read(self.root)
            trunk_stage = trunk_run.stage("trunk")
            self.rewind = trunk_stage.load(k, with_state=c.imp.rewind_optimizer)
            final = trunk_stage.load(self.setup.plan.total)
            for checkpoint in (self.rewind, final):  # refused here, naming the file, if not of the model
                checkpoint.into(self.setup.new_model())
            self.weights = final.tensors  # what level 1 prunes
        except BaseException as e:  # refused: the run folder as it was (`open_run`)
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self.masks = M.ones(self.setup.new_model())
        self.done = self.run.manifest.data.setdefault("levels", {})  # level -> its results row
        self.done["0"] = _row(0, self.masks, trunk_run.manifest.data, c, k)
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def segment(self, level: int) -> Segment:
        c = self.config
        self.masks = _level_masks(self.run, level, self.weights, self.masks, c, self.plain)
        model = _start_model(self.setup, self.rewind.tensors, c, level, self.masks)
        state = self.setup.state(model, self.plan, self.masks)
        if c.imp.rewind_optimizer:
            load_masked(state.optimizer, self.rewind, state.model, self.masks)
        scalars = {"density": M.density(self.masks), "remaining": M.remaining(self.masks)}
        return Segment(state, self.run.stage(f"level_{level:02d}"), self.k, self.setup.test,
                       c.runtime.progress, f"level {level}", start_scalars=("sparsity", scalars))

    def finish(self, level: int, segment: Segment, result: SegmentResult) -> None:
        from rewind.analysis.results import write_imp_results

        self.weights = {n: t.detach().cpu() for n, t in segment.state.model.state_dict().items()}
        self.done[str(level)] = _row(level, self.masks, {"final_test": result.final_test,
                                                         "best_test_acc": result.best_test_acc}, self.config, self.k)
        self.run.update(levels_done=max(int(n) for n in self.done))
        # Every level this branch holds, also those of an earlier, longer run.
        write_imp_results(self.run.root, [self.done[n] for n in sorted(self.done, key=int)])

    def result(self) -> ImpResult:
        rows = [self.done[n] for n in sorted(self.done, key=int) if int(n) <= self.config.imp.levels]
        return ImpResult(self.root, self.path, rows)


def _level_masks(branch: Run, level: int, weights, masks: M.Masks, config: cfg.Config,
                 plain: Path | None) -> M.Masks:
    """This level's masks: recorded ones if the level was started before, else computed and recorded."""
    key = f"level_{level:02d}/mask.safetensors"
    file = branch.root / key
    if key in branch.manifest.files and file.exists():
        return M.load(file, branch.manifest.files[key], like=masks)
    imp = config.imp
    if plain is not None:
        plain_run = runs.read(plain)
        if key not in plain_run.manifest.files:
            raise UserError(f"the plain IMP branch {plain} has no level {level}; run it with --levels {level} first")
        new = M.load(plain / key, plain_run.manifest.files[key], like=masks)
        if imp.control == "random-prune":
            new = magnitude.random_like(new, seeds.derive(imp.control_seed, "random-prune", level))
    else:
        dense = tuple(d.strip() for d in imp.dense_layers.split(",") if d.strip())
        unknown = [d for d in dense if not any(magnitude.is_dense(n, (d,)) for n in masks)]
        if unknown:
            raise UserError(f"dense_layers names no prunable weight: {', '.join(unknown)}; prunable weights are "
                            f"{', '.join(list(masks)[:4])}, ...")
        new = magnitude.prune({n: weights[n] for n in masks}, masks, imp.prune_fraction, imp.layerwise, dense)
    branch.manifest.files[key] = M.save(file, new)
    branch.manifest.save()
    return new


def _start_model(setup: Setup, rewind_tensors, config: cfg.Config, level: int, masks: M.Masks) -> torch.nn.Module:
    """The level's starting weights: the trunk at k (perturbed if asked), or a fresh draw for random re-init."""
    model = setup.new_model()
    if config.imp.perturb != "none":
        rewind_tensors = perturb(rewind_tensors, masks, config.imp.perturb,
                                 seeds.derive(config.imp.control_seed, "perturb", level), scale=config.imp.perturb_scale)
    if config.imp.control == "random-reinit":
        return setup.new_model(seed=seeds.derive(config.imp.control_seed, "reinit", level))
    keys = model.state_dict().keys()
    model.load_state_dict({n: t for n, t in rewind_tensors.items() if n in keys})
    return model


def _row(level: int, masks: M.Masks, result: dict, config: cfg.Config, k: int) -> dict:
    return {
        "level": level,
        "density": M.density(masks),
        "remaining": M.remaining(masks),
        "final_test_acc": result["final_test"]["acc"],
        "best_test_acc": result["best_test_acc"],
        "rewind_iter": k,
        "pretrain": config.pretrain.pretrain,
        "control": config.imp.control,
        "perturb": config.imp.perturb,
    }

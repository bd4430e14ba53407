#!/usr/bin/env python3
"""The GPU check (issue 14) in one process under a time budget: the environment, the fast paths'
correctness against the eager step, throughput, and one whole 160-epoch ResNet-20 run on
CIFAR-10 (or as many whole epochs as fit, with the full run's time projected from them).

Usage, on a GPU machine with the CIFAR-10 image-folder archive copied beside the checkout:
    python tools/gpu_check.py --data data/cifar10-jpeg.tar.gz --out runs/gpu_check
    python tools/gpu_check.py --tiny --out /tmp/gpu_check     # any CPU, seconds: tiny model and data

It writes OUT/gpu_check.json (rewritten after every item, so a run cut short still leaves what it
measured) and OUT/gpu_check.md (a short table). Items run cheapest first. One whose time,
estimated from the rates measured so far, exceeds what is left of --budget-s is recorded as
skipped with the reason, and so is one the device cannot run (CUDA graphs on a CPU); one that
fails records its error line, and the check goes on. With --tiny, `torch.compile` uses the
`eager` backend (dynamo's capture without code generation, as the tests run it), unless
REWIND_COMPILE_BACKEND says otherwise; the JSON names the backend.

Everything runs through rewind's own code: `Setup.state` and `loop.train_step` (what `rewind train`
runs), the replica trainer, `evaluate_state` (the Eval hook's evaluation), `trunk.train` for the
whole run, and tools/bench.py's timers and plain-DataLoader reference.

Over 400 lines, and one idea: one device session under one budget, its items sharing the rates
measured so far to decide what still fits; split, each part would need that shared state.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bench  # noqa: E402
from rewind import config as cfg  # noqa: E402
from rewind.errors import UserError  # noqa: E402
from rewind.prune import masks as M  # noqa: E402
from rewind.train import loop  # noqa: E402
from rewind.train.evaluate import eval_batch_size, evaluate_state  # noqa: E402
from rewind.train.optim import compile_setting  # noqa: E402
from rewind.train.trunk import Setup  # noqa: E402

# Relative L2 difference of all weights (fast or stacked run against the eager solo run, from the
# same state after the same batches) that counts as the same training. Reordered float32 sums
# differ by about 1e-7 after one step and the early phase amplifies that chaotically; the check
# also measures that floor (`rounding_floor`: the eager run from weights perturbed by 1e-6), while
# a wrong learning rate, batch, momentum or mask is off by 1e-1 or more.
TOLERANCE = 1e-2
PERTURBATION = 1e-6
REPLICA_COUNTS = (1, 4, 8, 16, 32)
# What a first compilation is assumed to cost until one is measured (seconds).
COMPILE_PRIOR = {"cuda": 90.0, "cpu": 60.0, "eager": 5.0}
FP32_SETTINGS = ("eager", "compile", "graphs")
SETTINGS = {"eager": {"compile": "off"}, "compile": {"compile": "on"}, "graphs": {"compile": "graphs"},
            "bf16": {"compile": "auto", "precision": "bf16"}}
TINY = dict(source="synthetic", train_examples=128, test_examples=64, model="resnet8", width=8, batch_size=16,
            steps="2ep", lr_milestones="1ep", lr=0.05)


class Skip(Exception):
    """An item that is not run; the message says why."""


class Check:
    def __init__(self, args: argparse.Namespace):
        self.args, self.tiny = args, args.tiny
        self.start = time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.report: dict[str, Any] = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tiny": self.tiny, "budget_s": args.budget_s, "tolerance": TOLERANCE,
            "environment": {}, "correctness": {}, "throughput": {}, "full_run": {}}
        self._setup: Setup | None = None
        self.step_s: dict[str, float] = {}  # seconds per training step, per setting
        self.eval_s: dict[str, float] = {}  # seconds per test-set evaluation, per setting
        self.compile_s: float | None = None  # the longest compilation measured
        self.compiled: set[tuple[str, str]] = set()  # (setting, graph) compiled already

    # ---- bookkeeping

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (self.out / "gpu_check.md").write_text(table(self.report))

    def item(self, section: str, name: str, need: Callable[[], float], run: Callable[[], dict],
             setting: str | None = None) -> dict:
        """Run `run` if the device can run `setting` and its estimated seconds (`need`) fit what is
        left; record the result, the reason it was skipped, or its error line."""
        t0 = time.perf_counter()
        ran = False
        try:
            asked = [p for p in self.args.skip if f"{section}.{name}".startswith(p)]
            if asked:
                raise Skip(f"--skip {asked[0]}")
            if setting is not None:
                self.needs_cuda(setting)
            seconds, left = need(), self.left()
            if seconds > left:
                raise Skip(f"needs about {seconds:.1f} s by the rates measured so far; {max(left, 0.0):.1f} s "
                           "of the budget left")
            ran = True
            entry = run()
            entry["seconds"] = round(time.perf_counter() - t0, 2)
        except Skip as e:
            entry = {"skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - one failing item must not end the check
            traceback.print_exc()
            entry = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
        self.report[section][name] = entry
        print(f"{section}.{name}: {summary(entry)}", file=sys.stderr, flush=True)
        self.write()
        if ran and torch.cuda.is_available():  # what it left on the device goes before the next item
            gc.collect()  # (0.4 s a call on a CPU, where nothing is gained)
            torch.cuda.empty_cache()
        return entry

    # ---- the setup and its variants

    @property
    def setup(self) -> Setup:
        if self._setup is None:
            a = self.args
            overrides: dict[str, Any] = {"source": a.data, "data_dir": a.data_dir, "device": a.device,
                                         "progress": "none", "stats_every": "0it"}
            if self.tiny:
                overrides |= {**TINY, "source": "synthetic" if a.data == "cifar10" else a.data}
            elif a.data.startswith("synthetic"):
                overrides["train_examples"] = 10000
            self._setup = Setup.create(cfg.load(None, overrides))
        return self._setup

    def variant(self, setting: str, **values: Any) -> Setup:
        s = self.setup
        return dataclasses.replace(s, config=s.config.with_values(**SETTINGS[setting], **values))

    @property
    def cuda(self) -> bool:
        return self.setup.device.type == "cuda"

    def needs_cuda(self, setting: str) -> None:
        if setting == "graphs" and not self.cuda:
            raise Skip("CUDA graphs need a CUDA device (on a CPU torch.compile captures none)")

    def backend(self) -> str:
        return os.environ.get("REWIND_COMPILE_BACKEND", "inductor")

    def compiles(self, setting: str) -> bool:
        if setting == "eager":
            return False
        return setting != "bf16" or self.setup.device.type == "cuda"  # bf16 runs with compile auto

    def compile_cost(self, setting: str, graph: str) -> float:
        """Estimated seconds to compile `graph` (train, eval, replicas N) under `setting`."""
        if not self.compiles(setting):
            return 0.0
        first = self.compile_s if self.compile_s is not None else (
            COMPILE_PRIOR["eager"] if self.backend() == "eager" else COMPILE_PRIOR[self.setup.device.type])
        return 0.25 * first if (setting, graph) in self.compiled else first

    def step_cost(self, setting: str) -> float:
        """Seconds per training step: measured for `setting`, else the eager step's (or a guess)."""
        return self.step_s.get(setting, self.step_s.get("eager", 1.0))

    def note_compile(self, setting: str, graph: str, timing: bench.Timing, warmup: int, images: int) -> float:
        """The compilation inside a warm-up of `warmup` calls: its time less that many timed calls."""
        compile_s = max(0.0, timing.warmup_s - warmup * images / timing.images_s)
        if self.compiles(setting):
            if (setting, graph) not in self.compiled:
                self.compile_s = max(self.compile_s or 0.0, compile_s)
            self.compiled.add((setting, graph))
        return compile_s

    # ---- iteration counts

    @property
    def steps(self) -> int:
        return 8 if self.tiny else 50

    def counts(self, kind: str) -> tuple[int, int]:
        """(timed, warm-up) iterations for throughput `kind`: fast, replicas, eval (passes)."""
        if self.tiny:
            return {"fast": (4, 1), "replicas": (1, 1), "eval": (2, 1)}[kind]
        if self.cuda:
            return {"fast": (300, 50), "replicas": (100, 20), "eval": (20, 2)}[kind]
        return {"fast": (60, 5), "replicas": (20, 2), "eval": (3, 1)}[kind]


# ---- environment

def environment(check: Check) -> dict:
    cuda = torch.cuda.is_available()
    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
           "gpu": torch.cuda.get_device_name() if cuda else None,
           "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
           "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "compile_backend": check.backend(), "git": git_sha()}
    return env


def git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---- correctness

def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def relative_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    wa, wb = weights(a), weights(b)
    return float((wa - wb).norm() / wb.norm())


def trained(setup: Setup, init: dict[str, torch.Tensor], steps: int, masks: M.Masks | None = None,
            clock: dict[str, float] | None = None):
    """A TrainState of `setup` from weights `init`, after `steps` training steps; `clock` gets
    the first step's seconds (compilation) and the others' mean ("first", "step")."""
    model = setup.new_model()
    model.load_state_dict(init)
    state = setup.state(model, masks=masks)
    state.model.train()
    t0 = time.perf_counter()
    for it in range(steps):
        loop.train_step(state, it)
        if it == 0:
            bench.sync(setup.device)
            t1 = time.perf_counter()
    bench.sync(setup.device)
    if clock is not None:
        clock["first"], clock["step"] = t1 - t0, (time.perf_counter() - t1) / max(1, steps - 1)
    return state


def perturbed(init: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: v * (1 + scale * torch.randn(v.shape, generator=g).to(v.device, v.dtype)) if v.is_floating_point()
            else v for k, v in init.items()}


def random_masks(model: torch.nn.Module, density: float = 0.5) -> M.Masks:
    g = torch.Generator().manual_seed(0)
    return {k: torch.rand(m.shape, generator=g) < density for k, m in M.ones(model).items()}


def comparison(diff: float, **extra: Any) -> dict:
    return {"rel_diff": diff, "tolerance": TOLERANCE, "pass": diff <= TOLERANCE, **extra}


def correctness(check: Check) -> None:
    steps = check.steps
    holder: dict[str, Any] = {}

    def init() -> dict[str, torch.Tensor]:
        if "init" not in holder:
            holder["init"] = {k: v.clone() for k, v in check.setup.new_model().state_dict().items()}
        return holder["init"]

    def eager_cost() -> float:
        return steps * check.step_cost("eager")

    def eager() -> dict:
        clock: dict[str, float] = {}
        holder["eager"] = trained(check.variant("eager"), init(), steps, clock=clock)
        check.step_s.setdefault("eager", clock["step"])
        return {"iterations": steps, "note": "the reference of the comparisons below"}

    def against_eager(setting: str):
        def run() -> dict:
            if "eager" not in holder:
                raise Skip("the eager reference did not run")
            clock: dict[str, float] = {}
            state = trained(check.variant(setting), init(), steps, clock=clock)
            if check.compiles(setting):
                check.compiled.add((setting, "train"))
                check.compile_s = max(check.compile_s or 0.0, clock["first"] - clock["step"])
            check.step_s.setdefault(setting, clock["step"])
            return comparison(relative_difference(state.model, holder["eager"].model), iterations=steps)
        return run

    def floor() -> dict:
        if "eager" not in holder:
            raise Skip("the eager reference did not run")
        state = trained(check.variant("eager"), perturbed(init(), PERTURBATION), steps)
        return {"rel_diff": relative_difference(state.model, holder["eager"].model), "perturbation": PERTURBATION,
                "iterations": steps, "note": "eager from weights perturbed by this relative amount: the chaos floor"}

    check.item("correctness", "eager", eager_cost, eager)
    check.item("correctness", "eager_repeat", eager_cost, against_eager("eager"))
    check.item("correctness", "rounding_floor", eager_cost, floor)
    for setting in ("compile", "graphs"):
        check.item("correctness", setting, lambda s=setting: check.compile_cost(s, "train") + steps * check.step_cost(s),
                   against_eager(setting), setting)

    def pruned(setting: str):
        def run() -> dict:
            setup = check.variant(setting)
            masks = random_masks(setup.new_model())
            state = trained(setup, init(), steps, masks)
            params = dict(state.model.named_parameters())
            nonzero = sum(int((params[k].detach()[~m.to(params[k].device)] != 0).sum()) for k, m in masks.items())
            total = sum(int((~m).sum()) for m in masks.values())
            return {"pruned_zero": nonzero == 0, "pruned_entries": total, "nonzero_pruned": nonzero,
                    "density": 0.5, "iterations": steps}
        return run

    for setting in FP32_SETTINGS:
        check.item("correctness", f"pruned_{setting}",
                   lambda s=setting: check.compile_cost(s, "train") + steps * check.step_cost(s), pruned(setting), setting)

    def replicas() -> dict:
        from rewind.train.replicas import Replicas, train_step_replicas

        n = 4
        setups = [dataclasses.replace(check.setup, config=cfg.replicate(check.setup.config, r)) for r in range(n)]
        states = [s.state(s.new_model()) for s in setups]
        stacked = Replicas(states)
        stacked.model.train()
        for it in range(steps):
            train_step_replicas(stacked, it)
        stacked.write()
        diffs = []
        for s, state in zip(setups, states):
            alone = trained(s, s.new_model().state_dict(), steps)
            diffs.append(relative_difference(state.model, alone.model))
        return comparison(max(diffs), per_replica=diffs, replicas=n, iterations=steps,
                          compile=states[0].compile)

    setting = "compile" if check.compiles("compile") and check.setup.config.runtime.compile == "auto" and check.cuda \
        else "eager"
    check.item("correctness", "replicas",
               lambda: check.compile_cost(setting, "replicas4") + 8 * steps * check.step_cost(setting), replicas)


# ---- throughput

def throughput(check: Check) -> None:
    fast_iters, fast_warmup = check.counts("fast")

    def reference() -> dict:
        setup = check.variant("eager")
        workers = 0 if check.tiny else min(8, os.cpu_count() or 1)
        rate = bench.bench_reference(setup, fast_iters, fast_warmup, workers)
        return {"images_s": rate, "workers": workers, "iterations": fast_iters}

    check.item("throughput", "reference", lambda: 2 * (fast_iters + fast_warmup) * check.step_cost("eager"), reference)

    def fast(setting: str):
        def run() -> dict:
            setup = check.variant(setting)
            timing = bench.bench_fast(setup, fast_iters, fast_warmup)
            batch = setup.config.train.batch_size
            compile_s = check.note_compile(setting, "train", timing, fast_warmup, batch)
            check.step_s[setting] = batch / timing.images_s
            return {"images_s": timing.images_s, "warmup_s": timing.warmup_s, "compile_s": compile_s,
                    "iterations": fast_iters, "warmup": fast_warmup, "compile": compile_setting(setup.config.runtime.compile, setup.device),
                    "precision": setup.config.train.precision}
        return run

    for setting in ("eager", "compile", "graphs", "bf16"):
        check.item("throughput", f"fast_{setting}",
                   lambda s=setting: check.compile_cost(s, "train") + (fast_iters + fast_warmup) * check.step_cost(s),
                   fast(setting), setting)

    passes, eval_warmup = check.counts("eval")

    def evaluation(setting: str):
        def run() -> dict:
            setup = check.variant(setting)
            timing = bench.bench_eval(setup, passes, eval_warmup)
            n = len(setup.test[1])
            compile_s = check.note_compile(setting, "eval", timing, eval_warmup, n)
            check.eval_s[setting] = n / timing.images_s
            return {"images_s": timing.images_s, "warmup_s": timing.warmup_s, "compile_s": compile_s,
                    "test_images": n, "passes": passes, "batch_size": eval_batch_size(setup.device)}
        return run

    def eval_cost(setting: str) -> float:
        n = len(check.setup.test[1])
        per_pass = check.eval_s.get(setting, n / check.setup.config.train.batch_size * check.step_cost(setting) / 2)
        return check.compile_cost(setting, "eval") + (passes + eval_warmup) * per_pass

    for setting in FP32_SETTINGS:
        check.item("throughput", f"eval_{setting}", lambda s=setting: eval_cost(s), evaluation(setting), setting)

    rep_iters, rep_warmup = check.counts("replicas")
    setting = "compile" if check.cuda and check.setup.config.runtime.compile == "auto" else "eager"

    def replicas(n: int):
        def run() -> dict:
            setup = check.setup
            timing = bench.bench_replicas(setup, n, rep_iters, rep_warmup)
            images = n * setup.config.train.batch_size
            compile_s = check.note_compile(setting, f"replicas{n}", timing, rep_warmup, images)
            single = check.report["throughput"].get("fast_" + setting, {}).get("images_s")
            return {"images_s": timing.images_s, "warmup_s": timing.warmup_s, "compile_s": compile_s, "replicas": n,
                    "iterations": rep_iters, "vs_single_fast": timing.images_s / single if single else None,
                    "compile": compile_setting(setup.config.runtime.compile, setup.device)}
        return run

    for n in REPLICA_COUNTS:
        check.item("throughput", f"replicas_{n}",
                   lambda n=n: check.compile_cost(setting, f"replicas{n}")
                   + (rep_iters + rep_warmup) * n * check.step_cost(setting), replicas(n))


# ---- the whole run

def fastest_correct(check: Check) -> tuple[str, str]:
    """The fp32 setting with the highest measured training rate whose correctness passed."""
    t, c = check.report["throughput"], check.report["correctness"]
    rates = {}
    for s in FP32_SETTINGS:
        ok = s == "eager" or (c.get(s, {}).get("pass") and c.get(f"pruned_{s}", {}).get("pruned_zero"))
        if ok and "images_s" in t.get(f"fast_{s}", {}):
            rates[s] = t[f"fast_{s}"]["images_s"]
        elif ok and s in check.step_s:  # its throughput item did not run: the correctness run's rate
            rates[s] = check.setup.config.train.batch_size / check.step_s[s]
    if not rates:
        raise Skip("no training rate was measured")
    best = max(rates, key=rates.get)
    why = (f"highest measured fp32 training rate among settings whose correctness passed ({', '.join(rates)}); "
           "bf16 is left to the accuracy comparison of Part 2")
    return best, why


class EpochClock(loop.Hook):
    """Test accuracy and wall time at every epoch boundary of a run cut short."""

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor], ipe: int, device: torch.device):
        self.test, self.ipe, self.device = test, ipe, device
        self.last = time.perf_counter()
        self.epochs: list[dict] = []

    def at(self, step: int, state: loop.TrainState) -> None:
        if step and step % self.ipe == 0:
            result = evaluate_state(state, *self.test)
            bench.sync(self.device)
            now = time.perf_counter()
            self.epochs.append({"epoch": step // self.ipe, "test_acc": result["acc"], "test_loss": result["loss"],
                                "seconds": now - self.last})
            self.last = now


def plan_full_run(epochs: int, epoch_s: float, eval_s: float, extra_s: float, left_s: float) -> dict:
    """Whole run if it fits `left_s` (with a 10% margin), else the most whole epochs that do; both
    with the estimated full time: `epochs` epochs of `epoch_s` each, an evaluation after each and
    at the start, and `extra_s` (compilation) once."""
    whole = extra_s + epochs * (epoch_s + eval_s) + eval_s
    usable = 0.9 * left_s
    if whole <= usable:
        return {"status": "whole", "epochs": epochs, "estimated_s": whole}
    fit = int(max(0.0, usable - extra_s) // (epoch_s + eval_s))
    return {"status": "projected", "epochs": min(fit, epochs - 1), "estimated_s": whole}


def full_run(check: Check) -> None:
    holder: dict[str, Any] = {}

    def need() -> float:
        setting, why = fastest_correct(check)
        setup = check.variant(setting)
        plan = setup.plan
        epochs = plan.total // plan.iterations_per_epoch
        n = len(setup.test[1])
        eval_s = check.eval_s.get(setting, check.eval_s.get("eager", 0.0))
        if not eval_s:
            eval_s = n / setup.config.train.batch_size * check.step_cost(setting) / 2
        # the epoch's short last batch, if any, is a shape of its own: one more compilation
        extra = check.compile_cost(setting, "train") + (check.compile_cost(setting, "short batch")
                                                        if len(setup.data.train_y) % setup.config.train.batch_size else 0)
        holder.update(setting=setting, why=why, setup=setup, epochs=epochs,
                      plan=plan_full_run(epochs, plan.iterations_per_epoch * check.step_cost(setting), eval_s, extra,
                                         check.left()))
        if holder["plan"]["epochs"] < 1:
            raise Skip(f"one epoch does not fit: {holder['plan']['estimated_s']:.1f} s estimated for the whole run, "
                       f"{max(check.left(), 0.0):.1f} s left")
        return 0.0

    def run() -> dict:
        setup, plan, epochs = holder["setup"], holder["plan"], holder["epochs"]
        base = {"setting": holder["setting"], "why": holder["why"], "recipe_epochs": epochs,
                "model": setup.config.model.model, "data": setup.config.data.source,
                "estimated_s": plan["estimated_s"]}
        if plan["status"] == "whole":
            from rewind.train.trunk import train

            archive = check.out / "full-run"
            shutil.rmtree(archive, ignore_errors=True)  # a fresh run, not a resumed one
            config = setup.config.with_values(save_every=f"{epochs}ep", stats_every="0it", progress="none")
            t0 = time.perf_counter()
            result = train(config, archive)
            bench.sync(setup.device)
            return {**base, "status": "whole", "epochs": epochs, "wall_s": time.perf_counter() - t0,
                    "test_acc": result.final_test["acc"], "best_test_acc": result.best_test_acc,
                    "archive": str(archive)}
        state = setup.state(setup.new_model())
        ipe = setup.plan.iterations_per_epoch
        clock = EpochClock(setup.test, ipe, setup.device)
        t0 = time.perf_counter()
        loop.run(state, 0, plan["epochs"] * ipe, [clock])
        wall = time.perf_counter() - t0
        times = [e["seconds"] for e in clock.epochs]
        steady = sorted(times[1:] or times)[len(times[1:] or times) // 2]  # the median after the first (compiling) epoch
        projected = wall + (epochs - len(times)) * steady
        return {**base, "status": "projected", "epochs": len(times), "wall_s": wall,
                "test_acc": clock.epochs[-1]["test_acc"], "curve": clock.epochs,
                "projected_full_s": projected,
                "note": f"{len(times)} whole epochs of the {epochs}-epoch recipe (its learning-rate schedule) fit the "
                        f"budget; the full time is projected from them"}

    check.item("full_run", "run", need, run)


# ---- the table

def summary(entry: dict) -> str:
    if "skipped" in entry:
        return f"skipped: {entry['skipped']}"
    if "error" in entry:
        return f"error: {entry['error']}"
    if "rel_diff" in entry and "pass" in entry:
        return f"rel. weight diff {entry['rel_diff']:.2e} (tolerance {entry['tolerance']:.0e}): " \
               f"{'pass' if entry['pass'] else 'FAIL'}"
    if "rel_diff" in entry:
        return f"rel. weight diff {entry['rel_diff']:.2e} ({entry.get('note', '')})"
    if "pruned_zero" in entry:
        return f"pruned weights exactly 0.0: {entry['pruned_zero']} ({entry['nonzero_pruned']} of " \
               f"{entry['pruned_entries']} nonzero)"
    if "status" in entry:
        acc = f"test acc {100 * entry['test_acc']:.2f}%"
        if entry["status"] == "whole":
            return f"{entry['epochs']} epochs, {entry['setting']}: {entry['wall_s']:.0f} s, {acc}"
        return f"projected: {entry['epochs']} of {entry['recipe_epochs']} epochs, {entry['setting']}, " \
               f"{entry['wall_s']:.0f} s, {acc}; full run projected {entry['projected_full_s']:.0f} s"
    if "images_s" in entry:
        extra = f", compile {entry['compile_s']:.1f} s apart" if entry.get("compile_s", 0) >= 0.05 else ""
        return f"{entry['images_s']:.0f} images/s{extra}"
    return ", ".join(f"{k} {v}" for k, v in entry.items() if k != "seconds")


def table(report: dict) -> str:
    env = report["environment"]
    device = env.get("gpu") or f"CPU ({env.get('cpu_count')} cores)"
    lines = [f"# GPU check, {report['date']}", "",
             f"`{report['command']}` on {device}, torch {env.get('torch')}, CUDA {env.get('cuda')}; "
             f"{report.get('elapsed_s', 0):.0f} of {report['budget_s']:.0f} s budget"
             + (" (--tiny: tiny model and data, not a measurement)" if report["tiny"] else ""), "",
             "| section | item | result |", "| --- | --- | --- |"]
    for section in ("correctness", "throughput", "full_run"):
        for name, entry in report[section].items():
            lines.append(f"| {section} | {name} | {summary(entry).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget in seconds (default 420)")
    p.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--data", default="cifar10",
                   help="CIFAR-10 source as for `rewind train --data`: the image-folder archive (e.g. "
                        "data/cifar10-jpeg.tar.gz), cifar10 (torchvision) or synthetic")
    p.add_argument("--data-dir", default="~/.cache/rewind", help="decoded-dataset cache")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true",
                   help="tiny model (ResNet-8, width 8) and synthetic data, few iterations: runs on a CPU in seconds")
    p.add_argument("--skip", default="", type=lambda text: [t for t in text.split(",") if t],
                   help="items not to run, comma-separated SECTION.ITEM or a prefix of it, e.g. "
                        "'throughput.replicas,throughput.fast_bf16' (recorded as skipped)")
    args = p.parse_args(argv)
    if args.budget_s < 0:
        p.error("--budget-s must be 0 or more seconds")
    if args.tiny:
        torch.set_num_threads(1)  # tiny tensors: threads would only wait on each other
        os.environ.setdefault("REWIND_COMPILE_BACKEND", "eager")
    check = Check(args)
    check.report["environment"] = environment(check)
    check.write()
    try:
        check.setup  # noqa: B018 - the data are loaded (decoded once) here, inside the budget
    except UserError as e:
        check.report["environment"]["setup_error"] = str(e)
        check.write()
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = check.report["environment"]
    env |= {"device": str(check.setup.device), "model": check.setup.config.model.model,
            "data": check.setup.config.data.source, "train_images": len(check.setup.data.train_y),
            "test_images": len(check.setup.test[1]), "batch_size": check.setup.config.train.batch_size,
            "setup_s": round(time.perf_counter() - check.start, 2)}
    check.write()
    for section in (correctness, throughput, full_run):
        try:
            section(check)
        except Exception as e:  # noqa: BLE001 - a failure outside an item: record it and go on
            traceback.print_exc()
            check.report[section.__name__]["section_error"] = f"{type(e).__name__}: {e}"
            check.write()
    print(f"wrote {check.out / 'gpu_check.json'} and {check.out / 'gpu_check.md'} "
          f"({time.perf_counter() - check.start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Training throughput of ResNet-20 at batch 128: rewind's trainer against a plain eager reference.

All variants run in one process on one device, on the same data:

- reference: what most research code does. torchvision transforms per image in a DataLoader
  (the dataset's augmentation: RandomCrop(padding=4) and for CIFAR RandomHorizontalFlip; ToTensor,
  Normalize with the dataset's mean and std), an NCHW model, eager SGD with momentum and weight decay.
- fast: rewind's trainer (device-resident uint8 data, augmentation on the device, channels-last,
  foreach/fused SGD, torch.compile on CUDA), through the same `train_step` that `rewind train` runs.
- replicas N: N independent models trained together by the replica trainer (aggregate images/s).

Usage:
    python tools/bench.py                      # CPU or GPU, whatever is there; synthetic data
    python tools/bench.py --device cuda --data ../shared/data/cifar10-jpeg.tar.gz --full-run

On CUDA it also times CUDA graphs and bf16 autocast, and `--full-run` trains three whole
160-epoch runs (fast, eager, bf16) and compares their test accuracies.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewind import config as cfg  # noqa: E402
from rewind.train import loop  # noqa: E402
from rewind.train.trunk import Setup  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """A variant's rate after warm-up, and the warm-up's own time (compilation happens there)."""

    images_s: float
    warmup_s: float


def timed(step, device: torch.device, iters: int, warmup: int, images_per_call: int) -> Timing:
    """`step(i)` for i < warmup untimed (but clocked), then `iters` timed calls."""
    sync(device)
    start = time.perf_counter()
    for it in range(warmup):
        step(it)
    sync(device)
    mid = time.perf_counter()
    for it in range(warmup, warmup + iters):
        step(it)
    sync(device)
    return Timing(iters * images_per_call / (time.perf_counter() - mid), mid - start)


def bench_reference(setup: Setup, iters: int, warmup: int, workers: int) -> float:
    """Images per second of the plain eager loop."""
    import torchvision.transforms as T
    from PIL import Image

    data = setup.data  # augmented and normalised as the fast path feeds it
    augment = data.augmentation if setup.config.data.augment else "none"
    crop = [T.RandomCrop(data.image_size, padding=4)] if augment != "none" else []
    flip = [T.RandomHorizontalFlip()] if augment == "crop+flip" else []

    class Images(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.x = x.permute(0, 2, 3, 1).squeeze(-1).numpy()  # [N, H, W] for one channel, as PIL wants
            self.y = y.tolist()
            self.tf = T.Compose([*crop, *flip, T.ToTensor(), T.Normalize(data.mean, data.std)])

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.tf(Image.fromarray(self.x[i])), self.y[i]

    device = setup.device
    model = setup.new_model().to(memory_format=torch.contiguous_format)
    t = setup.config.train
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, **cfg.optimizer_settings(t, "sgd"))
    loader = torch.utils.data.DataLoader(Images(setup.data.train_x, setup.data.train_y), batch_size=t.batch_size,
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model.train()
    done, start = 0, None
    while done < warmup + iters:
        for x, y in loader:
            if done == warmup:
                sync(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + iters:
                break
    sync(device)
    rate = iters * t.batch_size / (time.perf_counter() - start)
    del loader
    gc.collect()  # its worker processes end now, not while the next variant is timed
    return rate


def bench_fast(setup: Setup, iters: int, warmup: int) -> Timing:
    """rewind's training step, as `rewind train` runs it with this setup's config."""
    state = setup.state(setup.new_model())
    state.model.train()
    return timed(lambda it: loop.train_step(state, it), setup.device, iters, warmup, setup.config.train.batch_size)


def bench_replicas(setup: Setup, n: int, iters: int, warmup: int) -> Timing:
    """Aggregate images per second of n replicas (different seeds) trained as one stacked model."""
    from rewind.train.replicas import Replicas, train_step_replicas

    states = []
    for r in range(n):
        s = dataclasses.replace(setup, config=cfg.replicate(setup.config, r))
        states.append(s.state(s.new_model()))
    replicas = Replicas(states)
    replicas.model.train()
    return timed(lambda it: train_step_replicas(replicas, it), setup.device, iters, warmup,
                 n * setup.config.train.batch_size)


def bench_eval(setup: Setup, repeats: int, warmup: int = 1) -> Timing:
    """Test-set evaluation as the training loop's Eval hook runs it (its compiled forward when compiling)."""
    from rewind.train.evaluate import evaluate_state

    state = setup.state(setup.new_model())
    images, labels = setup.test
    return timed(lambda it: evaluate_state(state, images, labels), setup.device, repeats, warmup, len(labels))


def stats_overhead(setup: Setup, step_seconds: float, repeats: int = 20) -> tuple[float, float]:
    """(seconds per online-statistics log step, fraction of training time at the default cadence)."""
    from rewind.train.early import EarlyStats

    class Discard:
        def log(self, *args, **kwargs):
            pass

    state = setup.state(setup.new_model())
    loop.train_step(state, 0)
    hook = EarlyStats(Discard(), {1})
    hook.at(0, state)  # copies the init reference
    sync(setup.device)
    start = time.perf_counter()
    for _ in range(repeats):
        hook.at(1, state)
    sync(setup.device)
    per_log = (time.perf_counter() - start) / repeats
    plan = setup.plan
    first = [s for s in plan.stats_steps if s < 4000]
    return per_log, per_log * len(first) / (min(4000, plan.total) * step_seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data", default="synthetic", help="dataset source, as for `rewind train --data`")
    p.add_argument("--data-dir", default="~/.cache/rewind")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per variant (default: 60 CPU, 300 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default: 5 CPU, 50 GPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the reference (default: cores)")
    p.add_argument("--replicas", default=None, help="replica counts, e.g. '1,4,8,16' (default: that on GPU, 1,2 on CPU)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "graphs"],
                   help="the fast path's compile setting for --full-run (as `rewind train --compile`)")
    p.add_argument("--eval-repeats", type=int, default=None,
                   help="timed passes over the test set (default: 3 CPU, 20 GPU)")
    p.add_argument("--only", default="", help="comma-separated variants to run: reference, fast, eval, stats, replicas "
                                              "(default: all; fast always runs, the ratios are to it)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, the cores)")
    p.add_argument("--full-run", action="store_true", help="on CUDA, also train whole 160-epoch runs (fast, eager, bf16) and compare accuracy")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = {"source": args.data, "data_dir": args.data_dir, "device": args.device, "steps": "160ep"}
    if args.data == "synthetic":
        overrides["train_examples"] = 10000
    setup = Setup.create(cfg.load(None, overrides))
    gpu = setup.device.type == "cuda"
    iters = args.iters or (300 if gpu else 60)
    warmup = args.warmup if args.warmup is not None else (50 if gpu else 5)
    workers = args.workers if args.workers is not None else min(8, torch.multiprocessing.cpu_count())
    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; torch {torch.__version__}; ResNet-20, batch 128; {iters} timed iterations each")

    want = set(args.only.split(",")) if args.only else {"reference", "fast", "eval", "stats", "replicas"}
    unknown = want - {"reference", "fast", "eval", "stats", "replicas"}
    if unknown:
        p.error(f"--only: unknown variant(s) {', '.join(sorted(unknown))}; pick from reference, fast, eval, stats, replicas")
    ref = None
    if "reference" in want:
        ref = bench_reference(setup, iters, warmup, workers)
        print(f"reference (DataLoader + torchvision, eager, {workers} workers): {ref:10.0f} images/s")
    fast = bench_fast(setup, iters, warmup).images_s  # every ratio below is to it
    vs_ref = f"  ({fast / ref:.2f}x reference)" if ref else ""
    print(f"fast (rewind trainer):                                  {fast:10.0f} images/s{vs_ref}")
    if "eval" in want:
        n_test = len(setup.test[1])
        evaluation = bench_eval(setup, args.eval_repeats or (20 if gpu else 3)).images_s
        print(f"evaluation ({n_test} test images, as the Eval hook runs it):  {evaluation:7.0f} images/s  "
              f"({evaluation / fast:.2f}x the training step)")
    if "stats" in want:
        per_log, fraction = stats_overhead(setup, 128 / fast)
        print(f"online early-phase statistics: {1000 * per_log:.1f} ms per log step, "
              f"{100 * fraction:.2f}% of training time over the first 4000 iterations at the default cadence")
    counts = [int(n) for n in (args.replicas or ("1,4,8,16" if gpu else "1,2")).split(",")] if "replicas" in want else []
    rep_iters = iters if gpu else max(3, iters // 3)
    single = None
    for n in counts:
        rate = bench_replicas(setup, n, rep_iters, min(warmup, 2) if not gpu else warmup).images_s
        single = single or (rate if n == 1 else None)
        vs = f"({rate / fast:.2f}x the single fast run" + (f", {rate / single:.2f}x replicas N=1)" if single else ")")
        print(f"replicas N={n:<3} aggregate:                             {rate:10.0f} images/s  {vs}")
    if gpu:
        total = setup.plan.total
        print(f"one 160-epoch run ({total} iterations) at the fast rate: {total * 128 / fast:.0f} s without evaluation")
    if gpu and "fast" in want:
        for label, values in (("CUDA graphs (--compile graphs)", {"compile": "graphs"}),
                              ("bf16 autocast (--precision bf16)", {"precision": "bf16"})):
            rate = bench_fast(dataclasses.replace(setup, config=setup.config.with_values(**values)), iters,
                              warmup).images_s
            print(f"fast, {label:<48} {rate:10.0f} images/s  ({rate / fast:.2f}x the fast run)", flush=True)
    if gpu and args.full_run:
        full_runs(setup.config.with_values(compile=args.compile))


def full_runs(config: cfg.Config) -> None:
    """Whole 160-epoch runs with evaluation every epoch: the fast path against the fp32 eager one
    (same data, same seeds), then bf16; and what that makes a 20-level IMP run (21 trainings)."""
    from rewind.train.trunk import train

    base = config.with_values(stats_every="0it", progress="none", save_every="160ep")
    arms = [(f"fast (compile {config.runtime.compile}, fp32)", base), ("eager (not compiled, fp32)", base.with_values(compile="off")),
            ("fast, bf16 autocast", base.with_values(precision="bf16"))]
    accs = {}
    for name, c in arms:
        start = time.perf_counter()
        result = train(c, Path("runs") / f"bench-full-{int(start)}")
        seconds, accs[name] = time.perf_counter() - start, 100 * result.final_test["acc"]
        print(f"full 160-epoch run, {name}: {seconds:.0f} s, test accuracy {accs[name]:.2f}%", flush=True)
        if name.startswith("fast (compile"):
            print(f"  a 20-level IMP run at this rate (21 trainings from k=0): about {21 * seconds / 60:.0f} min")
    fast, eager, bf16 = accs.values()
    print(f"test accuracy, fast - eager: {fast - eager:+.2f} points; bf16 - fp32 fast: {bf16 - fast:+.2f} points "
          "(one seed each)")


if __name__ == "__main__":
    main()

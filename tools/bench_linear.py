#!/usr/bin/env python3
"""Speed of `rewind linear`: the full reproductions, and batched arms against one arm at a time.

In one process, on one device:

- pathways: the whole multi-pathway reproduction (depths 2-4, onsets 0/400/750, 3 seeds: 9 trunks
  and 27 branches) through `rewind.linear.pathways.run` into a temporary folder (archives, tables,
  figures included); then its training alone, batched (every arm of a depth in one program, as the
  sweep trains them), against a plain loop that trains the same 36 arms one at a time the way
  research code does (nn-style parameters, autograd, torch.optim.SGD, the gate as `detach`).
- completion: the whole matrix-completion reproduction (depths 1-3, nine T_c, one seed) through
  `rewind.linear.completion.run`; then, per depth, `--slice` steps of its nine task-2 branches
  batched against the same nine one at a time (autograd loop, and rewind's own step on one arm),
  and the ratio those per-step times give for the whole reproduction (the trunk is one arm either way).
- threads: a step of nine depth-3 completion arms, of one depth-2 arm and of the 12 depth-4 pathways
  arms, at 1 and 2 torch threads, `--repeats` times each, interleaved (so that a busy spell of the
  machine hits both alike): the minimum and the median per step.
- batch: the time per arm of a depth-3 completion step with 4 to 54 arms in one batch (one thread), which
  sets how many arms a CPU batch holds (`rewind.linear.sweep.CPU_BATCH_BYTES`).

Usage:
    python tools/bench_linear.py                  # everything (minutes on a 2-core CPU)
    python tools/bench_linear.py --quick          # smaller completion run, for a check
    python tools/bench_linear.py --only threads,batch
    python tools/bench_linear.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewind.linear import completion, pathways, sweep  # noqa: E402
from rewind.linear.config import counts, load_completion, load_pathways  # noqa: E402
from rewind.linear.tasks import hierarchical_modes  # noqa: E402
from rewind.train.device import resolve_device  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev: torch.device) -> float:
    sync(dev)
    began = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - began


def pathway_arms(c) -> list[tuple[int, int, int | None]]:
    """(depth, seed, onset or None) of every arm of the sweep."""
    return [(d, s, o) for d in counts(c.depth, "depth") for s in counts(c.seeds, "seeds")
            for o in [None, *counts(c.deficit_start, "deficit_start")]]


def pathways_batched(c, dev: torch.device) -> None:
    """The sweep's training: per depth, the trunks to the end, then the branches from their onsets."""
    modes = hierarchical_modes()
    onsets = counts(c.deficit_start, "deficit_start")
    for depth in counts(c.depth, "depth"):
        seeds = counts(c.seeds, "seeds")
        init = [pathways.initial_weights(c, depth, s, modes) for s in seeds]
        trunk = pathways.PathwaysBatch(init, [None] * len(seeds), [c.steps] * len(seeds), modes, c, dev)
        at = {}
        for tau in range(c.steps):
            if tau in onsets:
                at[tau] = [trunk.weights(i) for i in range(len(seeds))]
            if tau % c.record_every == 0:
                trunk.record()
            trunk.step(tau)
        weights = [w for o in onsets for w in at[o]]
        lengths = [c.steps - o for o in onsets for _ in seeds]
        windows = [(0, c.deficit_length)] * len(weights)
        branches = pathways.PathwaysBatch(weights, windows, lengths, modes, c, dev)
        for tau in range(max(lengths)):
            if tau % c.record_every == 0:
                branches.record()
            branches.step(tau)
        sync(dev)


def pathways_loop(c, dev: torch.device) -> None:
    """The same arms one at a time, each from its own init (no trunk reuse), with autograd and SGD."""
    modes = hierarchical_modes()
    dtype = pathways.DTYPE
    target = modes.Y.T.to(dev, dtype)
    U, V = modes.U.to(dev, dtype), modes.V.to(dev, dtype)
    eye = torch.eye(8, dtype=dtype, device=dev)
    for depth, seed, onset in pathway_arms(c):
        init = pathways.initial_weights(c, depth, seed, modes)
        paths = [[init[f"layer{l}"][p].clone().to(dev).requires_grad_() for l in range(depth)]
                 for p in range(c.pathways)]
        opt = torch.optim.SGD([w for p in paths for w in p], lr=c.lr)
        for t in range(c.steps):
            outs = []
            for p, layers in enumerate(paths):
                h = eye
                for w in layers:
                    h = h @ w.T
                if p == 1 and onset is not None and onset <= t < onset + c.deficit_length:
                    h = h.detach()
                outs.append(h)
            loss = 0.5 * (sum(outs) - target).square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if t % c.record_every == 0:
                with torch.no_grad():
                    [torch.einsum("jm,ij,im->m", U, h, V) for h in outs]
        sync(dev)


def completion_batched(batch, steps: int) -> None:
    for tau in range(steps):
        batch.step(tau)


def completion_loop(weights: list[dict], task, c, steps: int, dev: torch.device) -> None:
    target, mask = (t.to(dev, torch.float32) for t in task)
    weight = mask / mask.sum()
    for arm in weights:
        layers = [arm[f"layer{l}"].clone().to(dev).requires_grad_() for l in range(len(arm))]
        opt = torch.optim.SGD(layers, lr=c.lr)
        for _ in range(steps):
            h = layers[0].T
            for w in layers[1:]:
                h = h @ w.T
            loss = 0.5 * ((h - target).square() * weight).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    sync(dev)


def per_step(batch, steps: int, dev: torch.device) -> float:
    return timed(lambda: completion_batched(batch, steps), dev) / steps


def completion_arms(c, depth: int, count: int, dev: torch.device, steps: int = 10 ** 9):
    """`count` task-2 arms of depth `depth` (seeds 0, 1, 2 in turn) as one batch."""
    variant = completion.variants(c)[0]
    tasks = completion.all_tasks(c, [0, 1, 2])
    arms = [completion.initial_weights(c, variant, depth, i % 3) for i in range(count)]
    return completion.CompletionBatch(arms, [((i % 3, variant), 2) for i in range(count)], [steps] * count, tasks, c,
                                      dev)


def bench_threads(repeats: int, dev: torch.device) -> None:
    """Per-step times at 1 and 2 threads, interleaved: min and median over `repeats` runs of 200 steps."""
    c = load_completion(None, {}).completion
    p = load_pathways(None, {"depth": "4"}).pathways
    modes = hierarchical_modes()
    cases = {"completion D=3, 9 arms": completion_arms(c, 3, 9, dev),
             "completion D=2, 1 arm": completion_arms(c, 2, 1, dev),
             "pathways D=4, 12 arms": pathways.PathwaysBatch(
                 [pathways.initial_weights(p, 4, i % 3, modes) for i in range(12)], [(0, 150)] * 12, [10 ** 9] * 12,
                 modes, p, dev)}
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for name, batch in cases.items():
            for count in (1, 2):
                torch.set_num_threads(count)
                per_step(batch, 20, dev)  # warm
                times.setdefault((name, count), []).append(per_step(batch, 200, dev))
    for name in cases:
        one, two = times[name, 1], times[name, 2]
        print(f"threads, {name}: 1 thread {1e3 * min(one):.3f} ms (median {1e3 * statistics.median(one):.3f}), "
              f"2 threads {1e3 * min(two):.3f} ms (median {1e3 * statistics.median(two):.3f}) per step")


def bench_batch(dev: torch.device) -> None:
    c = load_completion(None, {}).completion
    torch.set_num_threads(1)
    for count in (4, 9, 16, 27, 54):
        batch = completion_arms(c, 3, count, dev)
        per_step(batch, 10, dev)
        best = min(per_step(batch, max(20, 600 // count), dev) for _ in range(3))
        print(f"batch, completion D=3, {count} arms: {1e3 * best / count:.4f} ms per arm and step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of the reproductions (rewind's default 1; "
                                                          "0 = torch's default)")
    p.add_argument("--slice", type=int, default=1000, help="steps per arm of the completion speed comparison")
    p.add_argument("--repeats", type=int, default=5, help="runs of each thread count in the threads part")
    p.add_argument("--quick", action="store_true", help="completion with T_c up to 10k and 3k task-2 steps")
    p.add_argument("--only", default="pathways,completion,threads,batch", help="comma-separated parts to run")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    parts = set(args.only.split(","))
    runtime = {"device": args.device, "progress": "none", "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        if "pathways" in parts:
            study = load_pathways(Path(__file__).resolve().parents[1] / "configs" / "linear_pathways.toml", runtime)
            full = timed(lambda: pathways.run(study, Path(tmp) / "dln"), dev)
            print(f"pathways, full reproduction (36 arms, archives, tables, figures): {full:.1f} s")
            c = study.pathways
            batched = timed(lambda: pathways_batched(c, dev), dev)
            loop = timed(lambda: pathways_loop(c, dev), dev)
            print(f"pathways, training only: batched {batched:.2f} s, one arm at a time {loop:.2f} s, "
                  f"ratio {loop / batched:.1f}x")
        if "completion" in parts:
            overrides = {**runtime, "seeds": "0"}
            if args.quick:
                overrides |= {"pretrain_steps": "0,1k,2k,5k,10k", "task2_steps": 3000}
            study = load_completion(Path(__file__).resolve().parents[1] / "configs" / "linear_completion.toml",
                                    overrides)
            c = study.completion
            full = timed(lambda: completion.run(study, Path(tmp) / "mc"), dev)
            points = counts(c.pretrain_steps, "pretrain_steps", allow_k=True)
            print(f"completion, full reproduction (depths {c.depth}, {len(points)} T_c, trunk {max(points)} steps, "
                  f"branches {c.task2_steps} steps): {full:.1f} s")
            variant = completion.variants(c)[0]
            task = completion.all_tasks(c, [0])[0, variant]
            vec_total = loop_total = 0.0
            for depth in counts(c.depth, "depth"):
                arms = [completion.initial_weights(c, variant, depth, 0) for _ in points]
                nine = completion_arms(c, depth, len(points), dev, args.slice)
                one = completion_arms(c, depth, 1, dev, args.slice)
                t_nine, t_one = per_step(nine, args.slice, dev), per_step(one, args.slice, dev)
                t_loop = timed(lambda: completion_loop(arms, (task.target2, task.mask2), c, args.slice, dev),
                               dev) / args.slice / len(arms)
                vec = max(points) * t_one + c.task2_steps * t_nine
                loop = max(points) * t_loop + len(points) * c.task2_steps * t_loop
                vec_total, loop_total = vec_total + vec, loop_total + loop
                print(f"completion D={depth}: per step {len(arms)} arms batched {1e3 * t_nine:.3f} ms, one arm "
                      f"{1e3 * t_one:.3f} ms (rewind's step), {1e3 * t_loop:.3f} ms (autograd loop); "
                      f"batched vs rewind's step one at a time {len(arms) * t_one / t_nine:.1f}x; the depth's "
                      f"sweep batched {vec:.0f} s against {loop:.0f} s one arm at a time with autograd: "
                      f"{loop / vec:.1f}x")
            print(f"completion, training from those per-step times: batched {vec_total:.0f} s, one arm at a time "
                  f"(autograd) {loop_total:.0f} s, ratio {loop_total / vec_total:.1f}x")
    if "threads" in parts:
        bench_threads(args.repeats, dev)
    if "batch" in parts:
        bench_batch(dev)


if __name__ == "__main__":
    main()

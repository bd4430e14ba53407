"""N independent trainings in one process as one stacked model (`rewind.models.stacked`).

Each replica keeps its own TrainState (model, torch SGD, loader and seeds, plan, masks, phases),
stage and hooks; only the forward, backward and optimizer step run stacked. The stacked weights
and momentum are written back into each replica's own model and optimizer at the steps where a
hook reads them, so every replica's archive is exactly what a solo run would write, and solo
and parallel runs can resume each other's checkpoints.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from rewind.errors import UserError
from rewind.models.stacked import StackedResNet
from rewind.prune.masks import Applier
from rewind.train.loop import TrainState, autocast
from rewind.train.optim import compiled, new_graph_step
from rewind.train.segment import Segment, SegmentResult, train_segment


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """A tensor stacked along dim 0 as (N, ...): row k is a view of replica k's block."""
    return t.unflatten(0, (n, -1))


class StackedSGD:
    """torch.optim.SGD's update on tensors stacked along dim 0, with a learning rate and weight decay
    per replica.

    Replicas sharing (lr, weight decay) are updated together by the foreach ops and Python
    scalars that torch.optim.SGD itself uses, so each replica's update is torch's, bit for bit;
    an lr tensor broadcast over the slices would need other kernels, whose rounding (fused
    multiply-add or not) is not torch's. Most steps form one group. Like SGD, the first step
    sets the momentum buffer to the (decayed) gradient. `.grad` is left as the loss gradient.
    """

    def __init__(self, params: Sequence[torch.Tensor], n: int, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.params, self.n = list(params), n
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.buffers: list[torch.Tensor] | None = None  # momentum buffers, stacked like the params

    def _groups(self, lrs: Sequence[float], wds: Sequence[float]):
        """((lr, wd), replica indices) for each distinct pair, in order of first appearance."""
        keys = list(zip(lrs, wds))
        if len(keys) != self.n:
            raise ValueError(f"expected {self.n} learning rates and weight decays, got {len(keys)}")
        for key in dict.fromkeys(keys):
            yield key, [k for k in range(self.n) if keys[k] == key]

    def _select(self, tensors: list[torch.Tensor], replicas: list[int]) -> list[torch.Tensor]:
        if len(replicas) == self.n:
            return tensors
        return [_rows(t, self.n)[k] for k in replicas for t in tensors]

    @torch.no_grad()
    def step(self, lrs: Sequence[float], wds: Sequence[float]) -> None:
        first = self.momentum != 0 and self.buffers is None
        if first:
            self.buffers = [torch.empty_like(p) for p in self.params]
        all_grads = [p.grad for p in self.params]
        for (lr, wd), replicas in self._groups(lrs, wds):
            params, grads = self._select(self.params, replicas), self._select(all_grads, replicas)
            if wd != 0:  # out of place, as torch's SGD: `.grad` keeps the loss gradient hooks read
                grads = torch._foreach_add(grads, params, alpha=wd)
            if self.momentum != 0:
                bufs = self._select(self.buffers, replicas)
                if first:
                    torch._foreach_copy_(bufs, grads)
                else:
                    torch._foreach_mul_(bufs, self.momentum)
                    torch._foreach_add_(bufs, grads, alpha=1 - self.dampening)
                if self.nesterov:
                    grads = torch._foreach_add(grads, bufs, alpha=self.momentum)
                else:
                    grads = bufs
            torch._foreach_add_(params, grads, alpha=-lr)


class Replicas:
    """N TrainStates trained as one stacked model; their own models and optimizers are written on demand."""

    def __init__(self, states: Sequence[TrainState]):
        self.states = list(states)
        _check_shared(self.states)
        self.model = StackedResNet.of([s.model for s in self.states])
        self.names = [name for name, _ in self.model.named_parameters()]
        self.optimizer = StackedSGD(list(self.model.parameters()), len(self.states), **_sgd_options(self.states))
        self.applier = self._masks()
        # Compiled as the replicas' own states are (same setting, same device).
        self.forward: Callable[[torch.Tensor], torch.Tensor] | None = compiled(self.model, self.states[0].compile)
        self.last: tuple[list[float], list[float]] | None = None  # (lrs, wds) of the last step
        self.load()

    def _masks(self) -> Applier | None:
        """One stacked mask per name any replica masks; a replica without a mask for it keeps all ones."""
        names = dict.fromkeys(name for s in self.states if s.masks for name in s.masks)
        if not names:
            return None
        params = dict(self.model.named_parameters())
        stacked = {}
        for name in names:
            mask = torch.ones_like(params[name], dtype=torch.bool)
            rows = self.model.per_replica(name, mask)
            for k, s in enumerate(self.states):
                if s.masks and name in s.masks:
                    rows[k].copy_(s.masks[name])
            stacked[name] = mask
        applier = Applier(self.model, stacked)
        applier.weights()
        return applier

    def _replica_params(self, k: int) -> list[torch.nn.Parameter]:
        params = dict(self.states[k].model.named_parameters())
        return [params[name] for name in self.names]

    @torch.no_grad()
    def load(self) -> None:
        """Take weights, buffers and momentum from the replicas' own models and optimizers."""
        self.model.load_from([s.model for s in self.states])
        held = [[s.optimizer.state.get(p, {}).get("momentum_buffer") for p in self._replica_params(k)]
                for k, s in enumerate(self.states)]
        if self.optimizer.momentum == 0 or all(b is None for bufs in held for b in bufs):
            self.optimizer.buffers = None
            return
        # A missing buffer (a replica yet to step) as zeros: with dampening 0 (the recipe's), the next
        # step's 0 * momentum + grad is the grad, as SGD's first step sets it.
        self.optimizer.buffers = [torch.zeros_like(p) for p in self.optimizer.params]
        for i, (name, stacked) in enumerate(zip(self.names, self.optimizer.buffers)):
            rows = self.model.per_replica(name, stacked)
            for k, bufs in enumerate(held):
                if bufs[i] is not None:
                    rows[k].copy_(bufs[i])

    @torch.no_grad()
    def write(self) -> None:
        """Put weights, buffers and momentum back into each replica's model and torch SGD, as a solo run holds them."""
        self.model.write_to([s.model for s in self.states])
        for k, s in enumerate(self.states):
            if self.last is not None:
                for group in s.optimizer.param_groups:
                    group["lr"], group["weight_decay"] = self.last[0][k], self.last[1][k]
            if self.optimizer.buffers is None:
                continue
            for name, p, stacked in zip(self.names, self._replica_params(k), self.optimizer.buffers):
                row = self.model.per_replica(name, stacked)[k]
                state = s.optimizer.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.empty_like(p)
                state["momentum_buffer"].copy_(row)


def _sgd_options(states: Sequence[TrainState]) -> dict:
    options = []
    for s in states:
        if not isinstance(s.optimizer, torch.optim.SGD) or len(s.optimizer.param_groups) != 1:
            raise UserError("replicas trained together need a torch.optim.SGD with one parameter group each")
        g = s.optimizer.param_groups[0]
        if g.get("maximize"):
            raise UserError("replicas trained together cannot use SGD(maximize=True)")
        options.append({"momentum": g["momentum"], "dampening": g["dampening"], "nesterov": g["nesterov"]})
    if any(o != options[0] for o in options):
        raise UserError("replicas trained together need the same momentum, dampening and nesterov setting")
    return options[0]


def train_step_replicas(replicas: Replicas, iteration: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Iteration `iteration` of every replica: (loss per replica (N,), correct per replica (N,), batch size).

    The loss is the sum of the replicas' mean cross-entropies: replica k's parameters only touch
    its own term, so each gets exactly its solo gradient. Nothing here waits on the device.
    """
    states = replicas.states
    its = [iteration] * len(states) if isinstance(iteration, int) else list(iteration)
    lrs = [s.plan.lr_at(it) for s, it in zip(states, its)]
    wds = [s.weight_decay(it) for s, it in zip(states, its)]
    batches = [s.batch(it) for s, it in zip(states, its)]
    if len({len(y) for _, y in batches}) > 1:
        raise UserError(f"replicas drew batches of different sizes at iteration {iteration}: "
                        + ", ".join(str(len(y)) for _, y in batches))
    x = torch.cat([x for x, _ in batches], dim=1).contiguous(memory_format=torch.channels_last)
    y = torch.stack([y for _, y in batches])  # (N, B)
    new_graph_step(states[0].compile)
    with autocast(x.device, states[0].autocast):
        logits = (replicas.forward if replicas.forward is not None else replicas.model)(x)  # (N, B, classes)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(1)
    replicas.model.zero_grad(set_to_none=True)
    losses.sum().backward()
    if replicas.applier is not None:
        replicas.applier.grads()  # momentum and weight decay then see zeros at pruned entries
    replicas.optimizer.step(lrs, wds)
    if replicas.applier is not None:
        replicas.applier.weights()
    replicas.last = (lrs, wds)
    return losses.detach(), (logits.detach().argmax(2) == y).sum(1), y.shape[1]


def _check_shared(states: Sequence[TrainState]) -> None:
    """What one stacked step needs all replicas to share."""
    for what, values in (("batch size", [s.loader.batch_size for s in states]),
                         ("precision", [s.autocast for s in states]),
                         ("compile setting", [s.compile for s in states])):
        if len(set(values)) > 1:
            raise UserError(f"replicas trained together need one {what}; got {', '.join(map(str, values))}")


def _check(items: Sequence[Segment]) -> None:
    """Before anything is opened or written."""
    if not items:
        raise UserError("run_segments needs at least one segment")
    _check_shared([s.state for s in items])
    # Replicas are aligned at their ends: replica k trains its iteration end_k - L + i at stacked
    # step i (L the longest length), joining when that reaches its start. So runs of one length
    # may start anywhere (continuations from several removal points), and runs with one end may
    # differ in length (IMP levels rewound to several k).
    lengths, ends = [s.end - s.start for s in items], [s.end for s in items]
    if len(set(lengths)) > 1 and len(set(ends)) > 1:
        raise UserError("replicas trained together need one length or one end; got lengths "
                        f"{', '.join(map(str, lengths))} and ends {', '.join(map(str, ends))}")
    loader = items[0].state.loader
    if loader.n % loader.batch_size and len({e % loader.iterations_per_epoch for e in ends}) > 1:
        raise UserError("runs trained together from different starting points must start at the same point of an "
                        "epoch (e.g. whole epochs), since the epoch's last batch is short; drop --parallel or "
                        "move the starts")


def _resume_left(items: Sequence[Segment], held: Sequence[set[int]]) -> int:
    """The fewest iterations left at which every run that has begun by then holds a checkpoint (or its
    start): the point the aligned replicas resume from."""
    lengths = [s.end - s.start for s in items]
    left = [{s.end - step for step in h} | {n} for s, h, n in zip(items, held, lengths)]
    return min(r for r in set().union(*left) if all(r in held_r for held_r, n in zip(left, lengths) if n >= r))


def run_segments(items: Sequence[Segment]) -> list[SegmentResult]:
    """`train_segment` for N replicas at once: each resumes, logs, evaluates and checkpoints into its own
    stage as if trained alone.

    A replica whose stage is complete is not retrained. The others resume from the latest point
    that all their stages hold (fresh if there is none), so they stay aligned; one that was
    ahead retrains the difference and keeps its later checkpoints.
    """
    _check(items)
    held = [s.resumable() for s in items]
    training = [(s, h) for s, h in zip(items, held) if s.end not in h]
    left = _resume_left(*zip(*training)) if training else 0
    opened: list[Segment] = []
    try:
        for segment, h in zip(items, held):
            opened.append(segment)
            done = segment.end in h
            ahead = not done and segment.end - segment.start > left  # it resumes from a checkpoint
            segment.open(segment.end if done else segment.end - left if ahead else None)
        if training:
            _train([s for s, _ in training], left)
    finally:
        for segment in opened:
            segment.close()
    return [segment.result() for segment in items]


def train_segments(items: Sequence[Segment], parallel: int = 1) -> list[SegmentResult]:
    """Every segment, in order: up to `parallel` at a time trained together (`run_segments`), a lone one alone."""
    results: list[SegmentResult] = []
    for i in range(0, len(items), parallel):
        group = items[i:i + parallel]
        results += run_segments(group) if len(group) > 1 else [train_segment(group[0])]
    return results


def _train(segments: Sequence[Segment], left: int) -> None:
    """The loop of `loop.run`, stacked: one step for all, then each replica's own hooks.

    Replicas are aligned at their ends (`_check`); one whose start comes later joins when the
    others reach it, and the stacked model is rebuilt from the replicas' own states.
    """
    # Replicas train through the stacked (compiled) model; compiling each one's own model too,
    # only for its evaluations, would cost N compilations.
    for segment in segments:
        segment.state.forward = None
    # The replicas' models and optimizers are written only where a hook may read them.
    # (A log step reads only the train log's sums, which the stacked step hands each replica.)
    sync = [s.state.plan.eval_steps | s.state.plan.save_steps | s.state.plan.stats_steps
            | s.state.plan.fisher_steps | {s.end} for s in segments]
    active: list[int] = []
    replicas: Replicas | None = None
    for i in range(left):
        its = [s.end - left + i for s in segments]
        joining = [k for k, s in enumerate(segments) if k not in active and its[k] >= s.first]
        if joining:
            if replicas is not None:
                replicas.write()
            for k in joining:
                if segments[k].resumed is None:
                    for h in segments[k].hooks:
                        h.at(segments[k].first, segments[k].state)
            active += joining
            replicas = Replicas([segments[k].state for k in active])
            replicas.model.train()
        losses, correct, count = train_step_replicas(replicas, [its[k] for k in active])
        for row, k in enumerate(active):
            for h in segments[k].hooks:
                h.after_step(its[k], losses[row], correct[row], count)
        if any(its[k] + 1 in sync[k] for k in active):
            replicas.write()
        for k in active:
            for h in segments[k].hooks:
                h.at(its[k] + 1, segments[k].state)

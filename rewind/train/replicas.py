"""N independent trainings in one process as one stacked model (`rewind.models.stacked`).

Each replica keeps its own TrainState (model, torch optimizer, loader and seeds, plan, masks,
phases), stage and hooks; only the forward, backward and optimizer step run stacked. The stacked
weights and optimizer state are written back into each replica's own model and optimizer at the steps where a
hook reads them, so every replica's archive is exactly what a solo run would write, and solo
and parallel runs can resume each other's checkpoints.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from rewind import config as cfg
from rewind.errors import UserError
from rewind.models import stacked as stacking
from rewind.models.stacked import Stacked
from rewind.prune.masks import Applier
from rewind.train.loop import TrainState, autocast
from rewind.train.optim import compiled, new_graph_step
from rewind.train.segment import Segment, SegmentResult, train_segment


# Optimizers whose update is elementwise per parameter, so replica k's rows of a stacked tensor
# get exactly the update its own tensors would.
STACKABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)
_PER_REPLICA = ("params", "lr", "weight_decay", "initial_lr")  # what may differ between replicas' groups


class StackedOptimizer:
    """The replicas' own optimizer class (SGD, Adam, AdamW, RMSprop) stepping the stacked model.

    Each replica's rows of a stacked parameter are a leaf alias (a Parameter viewing those rows),
    with that replica's optimizer state. One torch optimizer steps all aliases, one parameter
    group per distinct (learning rate, weight decay) among the replicas, so each replica's update
    is torch's own, bit for bit, while most steps are one multi-tensor call for all replicas.
    The stacked gradients are kept between steps (zeroed, not freed) so the aliases' gradients,
    views of them, stay valid.
    """

    def __init__(self, stacked: Stacked, names: Sequence[str], states: Sequence[TrainState]):
        self.cls = type(states[0].optimizer)
        self.defaults = _optimizer_options(states)
        params = dict(stacked.module.named_parameters())
        self.params = [params[name] for name in names]
        rows = [stacked.per_replica(name, params[name].detach()) for name in names]
        self.aliases = [[torch.nn.Parameter(r[k]) for r in rows] for k in range(len(states))]
        self.state: dict[torch.nn.Parameter, dict] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self._groups: tuple | None = None
        self._grads_bound = False

    def _bind_grads(self, stacked: Stacked, names: Sequence[str]) -> None:
        for name, p, aliases in zip(names, self.params, zip(*self.aliases)):
            grads = stacked.per_replica(name, p.grad)
            for k, alias in enumerate(aliases):
                alias.grad = grads[k]
        self._grads_bound = True

    @torch.no_grad()
    def step(self, stacked: Stacked, names: Sequence[str], lrs: Sequence[float], wds: Sequence[float]) -> None:
        if not self._grads_bound:
            self._bind_grads(stacked, names)
        groups = tuple(zip(lrs, wds))
        if groups != self._groups:
            by_setting: dict[tuple[float, float], list[int]] = {}
            for k, key in enumerate(groups):
                by_setting.setdefault(key, []).append(k)
            param_groups = [{"params": [a for k in ks for a in self.aliases[k]], "lr": lr, "weight_decay": wd,
                             **self.defaults} for (lr, wd), ks in by_setting.items()]
            self.optimizer = self.cls(param_groups)
            self.optimizer.state.update(self.state)
            self.state = self.optimizer.state  # the same dict from now on: torch adds each alias's state to it
            self._groups = groups
        self.optimizer.step()


def _optimizer_options(states: Sequence[TrainState]) -> dict:
    """The optimizer settings every replica shares (all but learning rate and weight decay)."""
    options = []
    for s in states:
        if type(s.optimizer) not in STACKABLE_OPTIMIZERS or len(s.optimizer.param_groups) != 1:
            raise UserError(f"replicas trained together need one of {', '.join(c.__name__ for c in STACKABLE_OPTIMIZERS)} "
                            f"with one parameter group each; got {type(s.optimizer).__name__}")
        options.append({k: v for k, v in s.optimizer.param_groups[0].items() if k not in _PER_REPLICA})
    if len({type(s.optimizer) for s in states}) > 1 or any(o != options[0] for o in options):
        raise UserError("replicas trained together need one optimizer with the same settings (momentum, betas, eps, "
                        "...); they may differ only in learning rate and weight decay")
    return options[0]


class Replicas:
    """N TrainStates trained as one stacked model; their own models and optimizers are written on demand."""

    def __init__(self, states: Sequence[TrainState]):
        self.states = list(states)
        _check_shared(self.states)
        self.stacked = Stacked([s.model for s in self.states])
        self.model = self.stacked.module
        self.names = [name for name, _ in self.model.named_parameters()]
        self.optimizer = StackedOptimizer(self.stacked, self.names, self.states)
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
            rows = self.stacked.per_replica(name, mask)
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
        """Take weights, buffers and optimizer state from the replicas' own models and optimizers."""
        self.stacked.load_from([s.model for s in self.states])
        for k, s in enumerate(self.states):
            for p, alias in zip(self._replica_params(k), self.optimizer.aliases[k]):
                held = s.optimizer.state.get(p, {})
                self.optimizer.state[alias] = {key: v.clone() if torch.is_tensor(v) else v for key, v in held.items()}

    @torch.no_grad()
    def write(self) -> None:
        """Put weights, buffers and optimizer state back into each replica's model and optimizer, as a
        solo run holds them."""
        self.stacked.write_to([s.model for s in self.states])
        for k, s in enumerate(self.states):
            if self.last is not None:
                for group in s.optimizer.param_groups:
                    group["lr"], group["weight_decay"] = self.last[0][k], self.last[1][k]
            for p, alias in zip(self._replica_params(k), self.optimizer.aliases[k]):
                held = s.optimizer.state[p]
                for key, v in self.optimizer.state.get(alias, {}).items():
                    if not torch.is_tensor(v):
                        held[key] = v
                    elif torch.is_tensor(held.get(key)) and held[key].shape == v.shape:
                        held[key].copy_(v)
                    else:
                        held[key] = v.clone()


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
        out = (replicas.forward if replicas.forward is not None else replicas.model)(x)
        logits = replicas.stacked.split(out)  # (N, B, classes)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y).mean(1)
    # Zeroed, not freed: the optimizer's per-replica gradients are views of these.
    replicas.model.zero_grad(set_to_none=False)
    losses.sum().backward()
    if replicas.applier is not None:
        replicas.applier.grads()  # momentum, moments and weight decay then see zeros at pruned entries
    replicas.optimizer.step(replicas.stacked, replicas.names, lrs, wds)
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
    _optimizer_options(states)
    stacking.check(states[0].model)


def _check(items: Sequence[Segment]) -> None:
    """Before anything is opened or written."""
    if not items:
        raise UserError("run_segments needs at least one segment")
    _check_shared([s.state for s in items])
    if any(s.state.plan.until_train_acc for s in items):
        raise UserError(cfg.FIT_ONE_AT_A_TIME)
    if any(getattr(s.state.phases, "has_optimizer_resets", lambda: False)() for s in items):
        raise UserError("runs whose stages reset the optimizer state train one at a time (the stacked optimizer "
                        "keeps its own state); drop --parallel")
    # Replicas are aligned at their ends: replica k trains its iteration end_k - L + i at stacked
    # step i (L the longest length), joining when that reaches its start. So runs of one length
    # may start anywhere (continuations from several removal points), and runs with one end may
    # differ in length (IMP levels rewound to several k).
    lengths, ends = [s.end - s.start for s in items], [s.end for s in items]
    if len(set(lengths)) > 1 and len(set(ends)) > 1:
        raise UserError("replicas trained together need one length or one end; got lengths "
                        f"{', '.join(map(str, lengths))} and ends {', '.join(map(str, ends))}")
    loader = items[0].state.loader
    positions = {s.state.plan.position(s.end) % loader.iterations_per_epoch for s in items}
    if loader.n % loader.batch_size and len(positions) > 1:
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

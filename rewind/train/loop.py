"""The training loop: forward, backward, step. Everything else is a hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rewind.data.loader import DeviceLoader
from rewind.train.schedule import Plan


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader
    plan: Plan
    # Called after each optimizer step (e.g. to re-apply pruning masks).
    after_update: list[Callable[[], None]] = field(default_factory=list)


class Hook:
    """Side work at iteration boundaries. `at(step)` sees the state after `step` iterations."""

    def at(self, step: int, state: TrainState) -> None:
        pass

    def after_step(self, iteration: int, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def train_step(state: TrainState, iteration: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    lr = state.plan.lr_at(iteration)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    x, y = state.loader.batch(iteration)
    logits = state.model(x)
    loss = F.cross_entropy(logits, y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    for fn in state.after_update:
        fn()
    return loss.detach(), (logits.detach().argmax(1) == y).sum(), len(y)


def run(state: TrainState, start: int, end: int, hooks: Sequence[Hook], at_start: bool = True) -> None:
    """Train iterations [start, end). `at_start=False` when resuming: step `start` was handled before."""
    state.model.train()
    if at_start:
        for h in hooks:
            h.at(start, state)
    for it in range(start, end):
        loss, correct, count = train_step(state, it)
        for h in hooks:
            h.after_step(it, loss, correct, count)
        for h in hooks:
            h.at(it + 1, state)

"""The training loop: forward, backward, step. Everything else is a hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rewind.data.loader import DeviceLoader
from rewind.prune.masks import Applier, Masks
from rewind.train.optim import compiled, new_graph_step
from rewind.train.schedule import Plan


@dataclass
class TrainState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader
    plan: Plan
    masks: Masks | None = None
    # Deficits / pre-training transforms: anything with batch(loader, iteration, position) (position:
    # the loader's iteration, `Plan.position`) and weight_decay_factor(iteration); None means the plain recipe.
    phases: Any = None
    compile: str = "off"  # off, on or graphs (`optim.compiled`); replicas compile their stacked model alike
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the compiled model, made from `compile`
    autocast: torch.dtype | None = None  # the training forward's reduced precision (bf16), None = fp32
    stop: bool = False  # set by a hook (`hooks.StopAtFit`) to end the run after the current step

    def __post_init__(self) -> None:
        if self.forward is None:
            self.forward = compiled(self.model, self.compile)
        self._applier = Applier(self.model, self.masks) if self.masks is not None else None
        if self._applier is not None:
            self._applier.weights()

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of this run's `iteration`: the loader's at its schedule step (`Plan.position`)."""
        position = self.plan.position(iteration)
        if self.phases is not None:
            return self.phases.batch(self.loader, iteration, position)
        return self.loader.batch(position)

    def weight_decay(self, iteration: int) -> float:
        wd = self.plan.weight_decay
        return wd * self.phases.weight_decay_factor(iteration) if self.phases is not None else wd


class Hook:
    """Side work at iteration boundaries. `at(step)` sees the state after `step` iterations."""

    def at(self, step: int, state: TrainState) -> None:
        pass

    def after_step(self, iteration: int, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision for the forward and loss when `dtype` is set; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def train_step(state: TrainState, iteration: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    lr, wd = state.plan.lr_at(iteration), state.weight_decay(iteration)
    for group in state.optimizer.param_groups:
        group["lr"], group["weight_decay"] = lr, wd
    resets = getattr(state.phases, "resets_optimizer", None)
    if resets is not None and resets(iteration):
        state.optimizer.state.clear()  # a new stage: momentum and moments start afresh
    x, y = state.batch(iteration)
    new_graph_step(state.compile)
    with autocast(x.device, state.autocast):
        logits = (state.forward if state.forward is not None else state.model)(x)
        loss = F.cross_entropy(logits, y)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state._applier is not None:
        state._applier.grads()  # momentum and weight decay then see zeros at pruned entries
    state.optimizer.step()
    if state._applier is not None:
        state._applier.weights()
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
        if state.stop:
            break

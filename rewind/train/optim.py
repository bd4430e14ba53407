"""The optimizer of the recipe: SGD with momentum and weight decay on all parameters."""

from __future__ import annotations

import os

import torch
from torch import nn

from rewind.config import TrainConfig


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.SGD:
    """SGD; fused on CUDA (one kernel for all parameters), foreach elsewhere (the same math)."""
    cuda = next(model.parameters()).device.type == "cuda"
    # The learning rate is set by the plan before every step; this value is only a placeholder.
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                           nesterov=t.nesterov, fused=True if cuda else None, foreach=None if cuda else True)


def compiled(model: nn.Module, setting: str, device: torch.device | None):
    """The compiled forward for training, or None (eager). `REWIND_COMPILE_BACKEND` picks the backend
    (tests use 'eager' to run the same wrapping on CPU without code generation)."""
    if setting == "off" or (setting == "auto" and (device is None or device.type != "cuda")):
        return None
    return torch.compile(model, backend=os.environ.get("REWIND_COMPILE_BACKEND", "inductor"), dynamic=False)


def autocast_dtype(t: TrainConfig) -> torch.dtype | None:
    """The training forward's autocast dtype for `precision`, or None for plain fp32."""
    return torch.bfloat16 if t.precision == "bf16" else None

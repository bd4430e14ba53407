"""The optimizer of the recipe: SGD with momentum and weight decay on all parameters."""

from __future__ import annotations

import torch
from torch import nn

from rewind.config import TrainConfig


def make_optimizer(model: nn.Module, t: TrainConfig) -> torch.optim.SGD:
    # The learning rate is set by the plan before every step; this value is only a placeholder.
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                           nesterov=t.nesterov)

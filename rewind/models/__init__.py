"""Model registry: names like `resnet20` -> a freshly initialised network."""

from __future__ import annotations

import re

import torch
from torch import nn

from rewind import seeds
from rewind.errors import UserError
from rewind.models.resnet import CifarResNet, init_weights

_RESNET = re.compile(r"^resnet(\d+)$")


def check_name(name: str) -> int:
    """The depth of a `resnet<D>` name; UserError unless D = 6n+2 with n >= 1."""
    m = _RESNET.match(name)
    if not m or (int(m[1]) - 2) % 6 or int(m[1]) < 8:
        raise UserError(f"unknown model {name!r}: use resnet<D> with D = 6n+2, e.g. resnet20, resnet32, resnet56")
    return int(m[1])


def build(name: str, width: int = 16, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A new model initialised from `seed` alone (the global RNG is left untouched)."""
    depth = check_name(name)
    # Module constructors draw default inits from the global RNG too (the fc bias keeps one).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.derive(seed, "init"))
        model = CifarResNet(depth, width, num_classes)
        init_weights(model)
    return model


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv and linear weights by parameter name (BatchNorm and biases are never pruned)."""
    return {
        f"{mod_name}.weight": m.weight
        for mod_name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }

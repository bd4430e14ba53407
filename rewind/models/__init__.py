"""Model registry: names like `resnet20`, `resnet18`, `vgg16`, `wrn16-8`, `lenet300-100`, `allcnn`
-> a freshly initialised network, each with its reference code's initialisation.

| name | network | width (default) | init |
| --- | --- | --- | --- |
| `resnet<6n+2>` | CIFAR ResNet, 3 stages of n blocks (OpenLTH `cifar_resnet_<D>`) | first stage (16) | OpenLTH |
| `resnet18` | CIFAR ResNet-18, 4 stages of `blocks` (2) blocks | first stage (64; 16 in Ash & Adams) | PyTorch |
| `vgg11/13/16/19` | CIFAR VGG with BatchNorm (OpenLTH `cifar_vgg_<D>`) | first conv (64) | OpenLTH |
| `wrn<d>-<k>` | wide ResNet, d = 6n+4 (Zagoruyko & Komodakis) | k, in the name | kaiming, BN 1/0 |
| `lenet<h1>-<h2>...` | fully connected (OpenLTH `mnist_lenet_<h1>_<h2>`) | hidden sizes, in the name | OpenLTH |
| `mlp<h1>-<h2>...` | the same network (Ash & Adams's MLP: mlp100-100) | hidden sizes, in the name | PyTorch |
| `allcnn` | All-CNN-C with BatchNorm (Springenberg et al.) | first conv (96) | kaiming, BN 1/0 |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from rewind import seeds
from rewind.errors import UserError
from rewind.models import init
from rewind.models.allcnn import AllCNN
from rewind.models.mlp import MLP
from rewind.models.resnet import cifar_resnet, resnet18
from rewind.models.vgg import PLANS as VGG_PLANS
from rewind.models.vgg import VGG
from rewind.models.wrn import WideResNet

NAMES = "resnet<6n+2> (resnet20, resnet56, ...), resnet18, vgg11, vgg13, vgg16, vgg19, wrn<6n+4>-<k> (wrn16-8), " \
        "lenet<h1>-<h2>... (lenet300-100), mlp<h1>-<h2>... (mlp100-100), allcnn"


@dataclass(frozen=True)
class Spec:
    """What a model name resolves to: how to build it, and which settings it takes."""

    name: str
    default_width: int  # 0: the model takes no --width
    takes_blocks: bool
    make: Callable[..., nn.Module]  # (width, blocks, num_classes, in_channels, image_size) -> module
    initialise: Callable[[nn.Module], None]


def spec(name: str) -> Spec:
    """The registry entry for `name`; UserError naming the valid names otherwise."""
    if m := re.fullmatch(r"resnet(\d+)", name):
        depth = int(m[1])
        if depth == 18:
            return Spec(name, 64, True, lambda w, b, c, i, s: resnet18(w, b or 2, c, i), init.pytorch_default)
        if depth >= 8 and (depth - 2) % 6 == 0:
            return Spec(name, 16, False, lambda w, b, c, i, s: cifar_resnet(depth, w, c, i), init.openlth)
    if (m := re.fullmatch(r"vgg(\d+)", name)) and int(m[1]) in VGG_PLANS:
        depth = int(m[1])
        return Spec(name, 64, False, lambda w, b, c, i, s: VGG(depth, w, c, i), init.openlth)
    if (m := re.fullmatch(r"wrn(\d+)-(\d+)", name)) and int(m[1]) >= 10 and (int(m[1]) - 4) % 6 == 0 and int(m[2]) >= 1:
        depth, k = int(m[1]), int(m[2])
        return Spec(name, 0, False, lambda w, b, c, i, s: WideResNet(depth, k, c, i), init.kaiming_unit_bn)
    if (m := re.fullmatch(r"(lenet|mlp)(\d+(?:-\d+)*)", name)) and all(int(h) > 0 for h in m[2].split("-")):
        hidden = [int(h) for h in m[2].split("-")]
        initialise = init.openlth if m[1] == "lenet" else init.pytorch_default  # mlp: Ash & Adams's code
        return Spec(name, 0, False, lambda w, b, c, i, s: MLP(hidden, i * s * s, c), initialise)
    if name == "allcnn":
        return Spec(name, 96, False, lambda w, b, c, i, s: AllCNN(w, c, i), init.kaiming_unit_bn)
    raise UserError(f"unknown model {name!r}; models: {NAMES}")


def check(name: str, width: int | None = 0, blocks: int = 0) -> Spec:
    """The spec of `name` after checking that `width` and `blocks` (0 or None = the model's default) apply to it."""
    s = spec(name)
    width = width or 0
    if width < 0 or blocks < 0:
        raise UserError(f"width and blocks must be positive (or 0 for the model's default); got {width}, {blocks}")
    if width and not s.default_width:
        raise UserError(f"{name} takes no --width (its size is in its name); drop --width")
    if blocks and not s.takes_blocks:
        raise UserError(f"--blocks applies to resnet18 only (blocks per stage); {name}'s depth is in its name")
    return s


def resolved_width(name: str, width: int = 0) -> int:
    """`width` as the model builds it: the model's default for 0 (0 for models that take none)."""
    return width or spec(name).default_width


def build(name: str, width: int = 0, num_classes: int = 10, seed: int = 0, *, blocks: int = 0, in_channels: int = 3,
          image_size: int = 32) -> nn.Module:
    """A new model initialised from `seed` alone (the global RNG is left untouched)."""
    s = check(name, width, blocks)
    # Module constructors draw default inits from the global RNG too (biases keep some of them).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.derive(seed, "init"))
        model = s.make(width or s.default_width, blocks, num_classes, in_channels, image_size)
        s.initialise(model)
    return model


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv and linear weights by parameter name (BatchNorm and biases are never pruned)."""
    return {
        f"{mod_name}.weight": m.weight
        for mod_name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def head(model: nn.Module) -> str:
    """The name of the layer that produces the logits (the last conv or linear): `fc` in most models."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]

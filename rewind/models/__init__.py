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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rewind import seeds
from rewind.models.names import NAMES, check, parse, resolved_width  # noqa: F401  (torch-free: config checks names)

if TYPE_CHECKING:
    from torch import nn

# Torch is imported inside the functions below, so that `rewind.models.names` (and with it every
# settings check) loads without it.


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
    from rewind.models import init
    from rewind.models.allcnn import AllCNN
    from rewind.models.mlp import MLP
    from rewind.models.resnet import cifar_resnet, resnet18
    from rewind.models.vgg import VGG
    from rewind.models.wrn import WideResNet

    n = parse(name)
    family, numbers = n.family, n.numbers
    makers = {
        "resnet18": (lambda w, b, c, i, s: resnet18(w, b or 2, c, i), init.pytorch_default),
        "resnet": (lambda w, b, c, i, s: cifar_resnet(numbers[0], w, c, i), init.openlth),
        "vgg": (lambda w, b, c, i, s: VGG(numbers[0], w, c, i), init.openlth),
        "wrn": (lambda w, b, c, i, s: WideResNet(*numbers, c, i), init.kaiming_unit_bn),
        # mlp: the same network with PyTorch's init (Ash & Adams's code)
        "lenet": (lambda w, b, c, i, s: MLP(list(numbers), i * s * s, c), init.openlth),
        "mlp": (lambda w, b, c, i, s: MLP(list(numbers), i * s * s, c), init.pytorch_default),
        "allcnn": (lambda w, b, c, i, s: AllCNN(w, c, i), init.kaiming_unit_bn),
    }
    make, initialise = makers[family]
    return Spec(name, n.default_width, n.takes_blocks, make, initialise)


def build(name: str, width: int = 0, num_classes: int = 10, seed: int = 0, *, blocks: int = 0, in_channels: int = 3,
          image_size: int = 32) -> nn.Module:
    """A new model initialised from `seed` alone (the global RNG is left untouched)."""
    import torch

    check(name, width, blocks)
    s = spec(name)
    # Module constructors draw default inits from the global RNG too (biases keep some of them).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.derive(seed, "init"))
        model = s.make(width or s.default_width, blocks, num_classes, in_channels, image_size)
        s.initialise(model)
    return model


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Conv and linear weights by parameter name (BatchNorm and biases are never pruned)."""
    from torch import nn

    return {
        f"{mod_name}.weight": m.weight
        for mod_name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


def head(model: nn.Module) -> str:
    """The name of the layer that produces the logits (the last conv or linear): `fc` in most models."""
    from torch import nn

    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]

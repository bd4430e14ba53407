"""Initialisations as in each model's reference code."""

from __future__ import annotations

from torch import nn


def openlth(model: nn.Module) -> None:
    """OpenLTH's `kaiming_normal` with `uniform` BatchNorm: kaiming normal conv and linear weights,
    BatchNorm gamma ~ U[0, 1] and beta = 0. Biases keep PyTorch's default init."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)


def kaiming_unit_bn(model: nn.Module) -> None:
    """Kaiming normal conv and linear weights (fan in), BatchNorm gamma = 1 and beta = 0, linear
    biases 0 (the wide ResNets' reference code, Zagoruyko & Komodakis 2016)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pytorch_default(model: nn.Module) -> None:
    """PyTorch's own layer init, as the ResNet-18 code the warm-start papers build on uses."""

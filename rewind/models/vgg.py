"""VGG for CIFAR with BatchNorm, as OpenLTH's `cifar_vgg_<D>` (Frankle et al.'s VGG-16).

Each conv is 3x3 with bias, then BatchNorm and ReLU; 'M' is a 2x2 max-pool. Four pools take
32x32 inputs to 2x2, which are averaged (OpenLTH's AvgPool2d(2), global here so that other
image sizes work alike) into the fc. Names: `layers.<i>.conv`, `layers.<i>.bn`, `fc`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PLANS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class ConvBN(nn.Module):
    def __init__(self, f_in: int, f_out: int):
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VGG(nn.Module):
    def __init__(self, depth: int, width: int = 64, num_classes: int = 10, in_channels: int = 3):
        """`width`: channels of the first conv (64 in VGG); every layer scales with it."""
        super().__init__()
        layers, f_in = [], in_channels
        for spec in PLANS[depth]:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                f_out = spec * width // 64
                layers.append(ConvBN(f_in, f_out))
                f_in = f_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)
        return self.fc(out)

"""All-CNN-C (Springenberg et al. 2015), with BatchNorm as in the critical-period experiments.

Nine convs: 3x3 96, 3x3 96, 3x3 96 stride 2, 3x3 192, 3x3 192, 3x3 192 stride 2, 3x3 192
(no padding), 1x1 192, 1x1 `classes`; each but the last followed by BatchNorm and ReLU (so
without bias); the last has a bias and is averaged over the image into the logits. No dropout.
Names: `layers.<i>.conv`, `layers.<i>.bn`, `head`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (out channels as a multiple of width/96, kernel, stride, padding)
PLAN = [(96, 3, 1, 1), (96, 3, 1, 1), (96, 3, 2, 1), (192, 3, 1, 1), (192, 3, 1, 1), (192, 3, 2, 1),
        (192, 3, 1, 0), (192, 1, 1, 0)]


class ConvBN(nn.Module):
    def __init__(self, f_in: int, f_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AllCNN(nn.Module):
    def __init__(self, width: int = 96, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers, f_in = [], in_channels
        for channels, kernel, stride, padding in PLAN:
            f_out = channels * width // 96
            layers.append(ConvBN(f_in, f_out, kernel, stride, padding))
            f_in = f_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Conv2d(f_in, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.head(self.layers(x)), 1).flatten(1)

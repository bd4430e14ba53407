"""ResNets for small images: the CIFAR ResNet of depth 6n+2 (He et al. 2016, as in OpenLTH
`cifar_resnet_<D>`) and the CIFAR variant of ResNet-18 (four stages of BasicBlocks with a 3x3
stem and no max-pool, as in the warm-starting and plasticity papers' code).

Both are `ResNet`: a 3x3 stem conv + BatchNorm, stages of BasicBlocks (the first block of every
stage after the first halves the resolution), global average pooling and an fc with bias.
Parameter names are `conv`, `bn`, `blocks.<i>.*` (blocks numbered across stages) and `fc`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """BasicBlock; a 1x1 conv + BatchNorm projection shortcut where the shape changes.

    The strided shortcut subsamples its input, then applies a 1x1 conv of stride 1: the same
    function as a 1x1 conv of stride 2, but it avoids a oneDNN CPU kernel that, for channels-last
    inputs with fewer channels than its block (8 on AVX2, 16 on AVX-512), computes wrong weight
    gradients, hangs or crashes (uxlfoundation/oneDNN#6035; tests/test_model.py).
    """

    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.stride = stride
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, bias=False), nn.BatchNorm2d(f_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        s = self.stride
        return F.relu(out + self.shortcut(x[:, :, ::s, ::s] if s > 1 else x))


class ResNet(nn.Module):
    """Stages of `blocks[i]` BasicBlocks of `widths[i]` channels."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, f_in, self.stages = [], widths[0], []
        for stage, (f_out, n) in enumerate(zip(widths, blocks)):
            self.stages.append(range(len(layers), len(layers) + n))  # block indices of this stage
            for i in range(n):
                layers.append(Block(f_in, f_out, downsample=stage > 0 and i == 0))
                f_in = f_out
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def cifar_resnet(depth: int, width: int = 16, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """The CIFAR ResNet of depth 6n+2: three stages of n blocks, widths w, 2w, 4w (w = 16 in the recipe)."""
    n = (depth - 2) // 6
    return ResNet((width, 2 * width, 4 * width), (n, n, n), num_classes, in_channels)


def resnet18(width: int = 64, blocks: int = 2, num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18 for CIFAR: four stages of `blocks` blocks (2 in ResNet-18), widths w, 2w, 4w, 8w."""
    return ResNet((width, 2 * width, 4 * width, 8 * width), (blocks,) * 4, num_classes, in_channels)

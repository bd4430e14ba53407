"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): WRN-d-k, pre-activation blocks.

A 3x3 stem of 16 channels, three stages of n = (d - 4) / 6 blocks of widths 16k, 32k, 64k
(strides 1, 2, 2), each block BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a 1x1 projection of the
activated input where the shape changes; then BN-ReLU, global average pooling and the fc.
No dropout (the paper's CIFAR default is 0 for the models it reports without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(f_in)
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        # Subsample, then 1x1 of stride 1: the projection, without the oneDNN kernel `resnet.Block` avoids.
        self.shortcut = nn.Conv2d(f_in, f_out, 1, bias=False) if stride != 1 or f_in != f_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        if self.shortcut is None:
            return out + x
        s = self.stride
        return out + self.shortcut(a[:, :, ::s, ::s] if s > 1 else a)


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n = (depth - 4) // 6
        self.conv = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, f_in = [], 16
        self.stages = []
        for stage, f_out in enumerate((16 * k, 32 * k, 64 * k)):
            self.stages.append(range(len(blocks), len(blocks) + n))
            for i in range(n):
                blocks.append(PreActBlock(f_in, f_out, 2 if stage > 0 and i == 0 else 1))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(f_in)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

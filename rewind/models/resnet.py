"""CIFAR ResNet of depth 6n+2 (He et al. 2016, as in OpenLTH `cifar_resnet_<D>`)."""

from __future__ import annotations

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


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, f_in = [], width
        for stage in range(3):
            f_out = width * 2**stage
            for i in range(n):
                blocks.append(Block(f_in, f_out, downsample=stage > 0 and i == 0))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(f_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def init_weights(model: nn.Module) -> None:
    """The recipe's init: kaiming normal conv/linear weights, BatchNorm gamma ~ U[0,1], beta = 0.

    The fc bias keeps PyTorch's default init, as in OpenLTH.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)

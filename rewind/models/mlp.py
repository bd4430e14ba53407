"""LeNet-style fully connected networks (OpenLTH `mnist_lenet_<h1>_<h2>`): the flattened image,
hidden layers with ReLU, and an fc head. LeNet-300-100 on MNIST has 266,610 parameters.
Names: `fc_layers.<i>`, `fc`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, hidden: Sequence[int], in_features: int, num_classes: int = 10):
        super().__init__()
        sizes = [in_features, *hidden]
        self.fc_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.fc = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1)
        for layer in self.fc_layers:
            out = F.relu(layer(out))
        return self.fc(out)

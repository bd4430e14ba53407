"""Test-set evaluation in large batches, with no host sync until the totals are read."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rewind.data.loader import Normalizer
from rewind.train.optim import new_graph_step


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer,
             batch_size: int = 1000, compile: str = "off") -> dict[str, float]:
    """Mean cross-entropy and accuracy (in [0, 1]) of `model` on uint8 `images`, in eval mode.
    `compile`: how `model` was compiled (`optim.compiled`)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for i in range(0, len(labels), batch_size):
        x, y = normalize(images[i:i + batch_size]), labels[i:i + batch_size]
        new_graph_step(compile)  # the last batch's logits are consumed: CUDA graphs may reuse their memory
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = len(labels)
    return {"loss": loss.item() / n, "acc": correct.item() / n}

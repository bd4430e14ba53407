"""Masks: one bool tensor per prunable weight (conv and linear), keyed by parameter name.

Pruned weights stay exactly zero: gradients are masked before the optimizer step (so momentum
and weight decay see zeros at pruned entries) and weights are masked again after it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save as st_save
from torch import nn

from rewind import models
from rewind.archive.atomic import write_bytes
from rewind.archive.checkpoints import read_masks, sha256
from rewind.errors import UserError

Masks = dict[str, torch.Tensor]


def ones(model: nn.Module) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in models.prunable(model).items()}


def density(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total


def remaining(masks: Masks) -> int:
    return sum(int(m.sum()) for m in masks.values())


def to_device(masks: Masks, device: torch.device | str) -> Masks:
    return {k: v.to(device) for k, v in masks.items()}


class Applier:
    """Applies masks to a model's parameters with multi-tensor ops (one launch per op on CUDA)."""

    def __init__(self, model: nn.Module, masks: Masks):
        params = dict(model.named_parameters())
        self.params = [params[name] for name in masks]
        self.masks = [m.to(p.device, p.dtype) for m, p in zip(masks.values(), self.params)]

    @torch.no_grad()
    def weights(self) -> None:
        torch._foreach_mul_(self.params, self.masks)

    @torch.no_grad()
    def grads(self) -> None:
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])


def save(path: str | Path, masks: Masks) -> str:
    """Write `masks`; returns the file's sha256 for the manifest."""
    blob = st_save({k: v.cpu().contiguous() for k, v in masks.items()})
    write_bytes(path, blob)
    return sha256(blob)


def load(path: str | Path, expected: str | None = None, like: Masks | None = None) -> Masks:
    """The masks saved at `path`, checked against `expected` (its sha256 in the manifest) when given,
    and to hold a mask of each shape of `like` (the model's) when given."""
    advice = "restore it, or delete its level folder to train that level again"
    masks = read_masks(Path(path), expected, advice)
    if like is not None and {k: v.shape for k, v in masks.items()} != {k: v.shape for k, v in like.items()}:
        raise UserError(f"mask {path} does not fit the model (its weights or their shapes differ); {advice}")
    return masks

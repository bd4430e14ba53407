"""Magnitude pruning (global or layerwise) and random pruning with the same per-layer density."""

from __future__ import annotations

import torch

from rewind import seeds
from rewind.prune.masks import Masks


def is_dense(name: str, dense: tuple[str, ...]) -> bool:
    return any(name == d or name.startswith(d.rstrip(".") + ".") for d in dense)


def _remove_smallest(scores: torch.Tensor, alive: torch.Tensor, count: int) -> torch.Tensor:
    """`alive` with the `count` alive entries of smallest score switched off (ties broken by position)."""
    flat_alive = alive.flatten()
    idx = flat_alive.nonzero().squeeze(1)
    order = torch.sort(scores.flatten()[idx], stable=True).indices
    out = flat_alive.clone()
    out[idx[order[:count]]] = False
    return out.view_as(alive)


def prune(weights: dict[str, torch.Tensor], masks: Masks, fraction: float = 0.2, layerwise: bool = False,
          dense: tuple[str, ...] = ()) -> Masks:
    """New masks with `fraction` of the remaining prunable weights removed, smallest |w| first.

    Global (the default, as in OpenLTH): one ranking over every prunable layer. Layerwise: each
    layer loses the same fraction. Layers in `dense` are neither pruned nor counted. The count
    removed is round(fraction * remaining), so density after L levels is 0.8^L to within a weight
    per level (per layer when layerwise).
    """
    names = [n for n in masks if not is_dense(n, dense)]
    new = {n: m.clone() for n, m in masks.items()}
    if not names:
        return new
    if layerwise:
        for n in names:
            count = round(fraction * int(masks[n].sum()))
            new[n] = _remove_smallest(weights[n].detach().abs().cpu(), masks[n].cpu(), count)
        return new
    scores = torch.cat([weights[n].detach().abs().cpu().flatten() for n in names])
    alive = torch.cat([masks[n].cpu().flatten() for n in names])
    flat = _remove_smallest(scores, alive, round(fraction * int(alive.sum())))
    offset = 0
    for n in names:
        k = masks[n].numel()
        new[n] = flat[offset:offset + k].view_as(masks[n])
        offset += k
    return new


def random_like(masks: Masks, seed: int) -> Masks:
    """Random masks with exactly the same number of surviving weights in every layer."""
    out = {}
    for n, m in masks.items():
        g = seeds.generator(seed, "random-prune", n)
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=g)[:keep]] = True
        out[n] = flat.view_as(m)
    return out

"""Perturbations of rewind-point weights under a mask (the controls of Frankle et al. 2020, section 5).

Only the masked layers' weights change, and only at kept entries: pruned entries come out
exactly 0, every other tensor (BatchNorm, biases, buffers) is copied unchanged. Each layer
draws from its own stream `seeds.generator(seed, "perturb", kind, name)`, so a layer's result
does not depend on the other layers. `std` below is the layer's init standard deviation:
`init_std[name]`, else the recipe's kaiming-normal std sqrt(2 / fan_in).

- `sign-keep`:          sign(w) * |N(0, std)|: keep each sign, redraw magnitudes from the init
                        distribution
- `shuffle`:            permute the kept weights within the layer (the layer's multiset is kept)
- `shuffle-keep-signs`: permute the kept magnitudes within the layer, each position keeps its sign
- `noise`:              w + N(0, (scale * std)^2)
- `reinit`:             fresh draws N(0, std^2), as a new initialisation would give
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from rewind import seeds
from rewind.errors import UserError
from rewind.prune.masks import Masks

KINDS = ("sign-keep", "shuffle", "shuffle-keep-signs", "noise", "reinit")


def kaiming_std(shape: torch.Size | tuple[int, ...]) -> float:
    """The std of `nn.init.kaiming_normal_` (fan_in, ReLU gain sqrt 2), the recipe's conv/linear init."""
    fan_in = math.prod(shape[1:])
    return math.sqrt(2.0 / fan_in)


def perturb(state_dict: Mapping[str, Tensor], masks: Masks, kind: str, seed: int, *,
            init_std: Mapping[str, float] | None = None, scale: float = 1.0) -> dict[str, Tensor]:
    """A new state dict: `state_dict` with its masked layers perturbed by `kind` (see the module docstring)."""
    if kind not in KINDS:
        raise UserError(f"unknown perturbation {kind!r}; choose one of {', '.join(KINDS)}")
    missing = [name for name in masks if name not in state_dict]
    if missing:
        raise UserError(f"the mask names layers the weights do not hold: {missing[:5]}")
    out = dict(state_dict)
    for name, mask in masks.items():
        w = state_dict[name]
        keep = mask.to(w.device).bool()
        std = float(init_std[name]) if init_std is not None else kaiming_std(w.shape)
        g = seeds.generator(seed, "perturb", kind, name)
        new = torch.zeros_like(w)
        new[keep] = _perturb_kept(w[keep], kind, std, scale, g)
        out[name] = new
    return out


def _perturb_kept(v: Tensor, kind: str, std: float, scale: float, g: torch.Generator) -> Tensor:
    """The new values of a layer's kept weights `v` (1-d); draws on the CPU generator, then moves."""
    def normal() -> Tensor:
        return torch.randn(v.shape, generator=g, dtype=v.dtype).to(v.device)

    def permutation() -> Tensor:
        return torch.randperm(v.numel(), generator=g).to(v.device)

    if kind == "sign-keep":
        return v.sign() * (std * normal()).abs()
    if kind == "shuffle":
        return v[permutation()]
    if kind == "shuffle-keep-signs":
        return v.sign() * v.abs()[permutation()]
    if kind == "noise":
        return v + scale * std * normal()
    return std * normal()  # reinit

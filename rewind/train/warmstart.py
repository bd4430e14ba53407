"""Warm-start operations applied between two training phases (Ash & Adams 2020; Berariu et al. 2021).

Both act in place on `model` (so an optimizer built on it keeps valid references) and take the
new values from `fresh_model`, a network of the same architecture freshly initialised, e.g.
`models.build(name, width, num_classes, seed=...)` with a seed of its own. Neither touches an
optimizer: the second phase is expected to start with a fresh one (momentum 0).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rewind.errors import UserError
from rewind.train.loop import Hook


def _check_same_architecture(model: nn.Module, fresh_model: nn.Module) -> None:
    a, b = model.state_dict(), fresh_model.state_dict()
    different = [k for k in a.keys() | b.keys() if k not in a or k not in b or a[k].shape != b[k].shape]
    if different:
        raise UserError(f"the fresh model does not match the trained one (first difference: {sorted(different)[0]!r}); "
                        "build it with the same architecture, width and number of classes")


@torch.no_grad()
def shrink_perturb(model: nn.Module, fresh_model: nn.Module, lam: float, sigma: float) -> None:
    """theta <- lam * theta + sigma * theta_fresh for every parameter (weights, biases, BN gamma/beta).

    BatchNorm running mean and variance are left as trained: they describe the old activations
    only approximately after shrinking, but training mode normalises with batch statistics and
    the running ones are re-estimated within a few dozen steps (momentum 0.1); `fresh_bn_statistics`
    replaces them with a fresh network's, as Ash & Adams's code does. lam=1, sigma=0
    leaves the model unchanged; lam=0, sigma=1 gives the fresh parameters exactly.
    """
    _check_same_architecture(model, fresh_model)
    fresh = dict(fresh_model.named_parameters())
    for name, p in model.named_parameters():
        p.mul_(lam).add_(fresh[name].to(p.device, p.dtype), alpha=sigma)


@torch.no_grad()
def reset_layers(model: nn.Module, fresh_model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Copy every parameter and buffer under the given module prefixes (e.g. 'blocks.8', 'fc') from
    the fresh model, BatchNorm running statistics included (a reset layer is a new layer).

    Returns the names copied; a prefix that names no module of the model is a UserError.
    """
    _check_same_architecture(model, fresh_model)
    fresh = fresh_model.state_dict()
    copied = check_layers(model, prefixes)
    target = model.state_dict()  # references to the live tensors: copy_ writes into the model
    for k in copied:
        target[k].copy_(fresh[k])
    return copied


def check_layers(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """The parameter and buffer names under the module prefixes (e.g. 'blocks.8', 'fc'); UserError for a
    prefix that names no module of the model (checked before anything trains)."""
    names: list[str] = []
    for prefix in prefixes:
        under = [k for k in model.state_dict() if k == prefix or k.startswith(prefix.rstrip(".") + ".")]
        if not under:
            modules = sorted({k.rsplit(".", 1)[0] for k in model.state_dict()})
            raise UserError(f"--reset-layers names no layer {prefix!r} of {type(model).__name__}; its modules include "
                            f"{', '.join(modules[:4])}, ..., {modules[-1]}")
        names += [k for k in under if k not in names]
    return names


@torch.no_grad()
def fresh_bn_statistics(model: nn.Module, fresh_model: nn.Module) -> list[str]:
    """Copy every BatchNorm buffer (running mean and variance, batch count) from the fresh model.

    Ash & Adams's code starts each phase from a new network into which it copies only the
    parameters (shrunk and perturbed, or as they are for a plain warm start), so the second phase
    starts from a fresh network's running statistics. Returns the names copied.
    """
    _check_same_architecture(model, fresh_model)
    fresh = dict(fresh_model.named_buffers())
    copied = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for name, buffer in module.named_buffers(recurse=False):
                full = f"{module_name}.{name}" if module_name else name
                buffer.copy_(fresh[full])
                copied.append(full)
    return copied



def layer_groups(model: nn.Module) -> list[list[str]]:
    """The layer groups of a ResNet, bottom to top, as module prefixes (Berariu et al., Fig. 6):
    1 = the stem (conv, bn), then one group per stage (its blocks), then the head (fc). ResNet-18
    has 6 groups, a CIFAR ResNet (three stages) 5."""
    if not hasattr(model, "stages"):
        raise UserError(f"{type(model).__name__} has no stages, so no layer groups to reset; "
                        "use a ResNet (resnet18, resnet20, ...)")
    from rewind.models import head

    stem = [name for name in ("conv", "bn") if hasattr(model, name)]
    return [stem, *[[f"blocks.{i}" for i in stage] for stage in model.stages], [head(model)]]


def top_groups(model: nn.Module, j: int) -> list[str]:
    """The module prefixes of layer groups j..G (1-based; see `layer_groups`)."""
    groups = layer_groups(model)
    if not 1 <= j <= len(groups):
        raise UserError(f"layer group {j} does not exist: this model has groups 1..{len(groups)} "
                        "(1 = stem, then the stages, then fc)")
    return [prefix for group in groups[j - 1:] for prefix in group]


class ShrinkPerturbAt(Hook):
    """Shrink-perturb during a run, at the given steps (the start of each stage): the weights the
    step's checkpoint saves, and the next step trains, are lam * theta + sigma * theta_fresh, with
    a fresh network's BatchNorm statistics if `fresh_bn`. A run resumed at such a step does not
    apply it again: its checkpoint holds the weights after it. (One model at a time: the stacked
    trainer does not run it.)"""

    def __init__(self, steps: set[int], fresh_model: nn.Module, lam: float, sigma: float, fresh_bn: bool):
        self.steps, self.fresh, self.lam, self.sigma, self.fresh_bn = set(steps), fresh_model, lam, sigma, fresh_bn

    def at(self, step: int, state) -> None:
        if step in self.steps:
            shrink_perturb(state.model, self.fresh, self.lam, self.sigma)
            if self.fresh_bn:
                fresh_bn_statistics(state.model, self.fresh)

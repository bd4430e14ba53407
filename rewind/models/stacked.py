"""N models of one architecture as a single network, so N trainings share every kernel launch.

Any registered model stacks: a copy of the first replica has every layer replaced by its
N-replica form, and its own forward runs unchanged on them. Activations carry the N replicas
side by side along the channel (or feature) dimension, replica k in block k:

- the input is the N batches concatenated along channels, (B, N*C, H, W);
- every conv becomes a grouped conv (groups = N x its own) whose weight (and bias) stacks the N
  replicas' along out-channels, so group k sees only replica k's channels;
- every BatchNorm2d becomes one BatchNorm2d over N*C channels: exactly per-replica BatchNorm,
  since BatchNorm is per channel; ReLU, pooling, residual sums are per channel too, and a
  flatten keeps each replica's features contiguous;
- every linear becomes a `StackedLinear`: (B, N*in) -> (B, N*out) by a batched matmul;
- the output (B, N*classes) is read as logits (N, B, classes) by `split`.

Parameter mapping: the stacked model has the same parameter and buffer names as each replica,
and `per_replica(name, tensor)` views a stacked tensor as (N, *replica shape), row k being
replica k's tensor of that name (conv and BatchNorm tensors: blocks along dim 0; linear
weight (N, out, in) and bias (N, out): index k along dim 0). BatchNorm num_batches_tracked is
one count of the batches since `load_from`, added to each replica's own count when written back.

What cannot be stacked exactly (dropout, whose random draws would differ from a solo run's, or
a layer type not listed above) is refused with a UserError before anything trains.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from rewind.errors import UserError

class StackedLinear(nn.Module):
    """N linear layers: (B, N*in) -> (B, N*out), replica k reading features [k*in, (k+1)*in)."""

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(1, (self.n, -1)).transpose(0, 1)  # (N, B, in)
        # baddbmm is the batched form of the addmm nn.Linear runs, so rounding stays close to it.
        out = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))  # (N, B, out)
        return out.transpose(0, 1).flatten(1)


def _kind(child: nn.Module) -> str:
    """How a layer stacks: 'conv', 'bn' or 'linear' (replaced), 'walk' (its children are); UserError if not."""
    if isinstance(child, nn.Conv2d):
        return "conv"
    if isinstance(child, nn.BatchNorm2d):
        return "bn"
    if isinstance(child, nn.Linear):
        if child.bias is None:
            raise UserError("replicas trained together need linear layers with a bias")
        return "linear"
    if isinstance(child, nn.Dropout) or any(True for _ in child.parameters(recurse=False)) \
            or any(True for _ in child.buffers(recurse=False)):
        raise UserError(f"a {type(child).__name__} layer cannot be stacked exactly (replicas trained together "
                        "would differ from their solo runs); drop --parallel for this model")
    return "walk"  # per-channel layers, containers and the model's own blocks, whose forwards use the above


def check(model: nn.Module) -> None:
    """UserError unless `model` stacks exactly (before anything is trained or written)."""
    for child in model.children():
        if _kind(child) == "walk":
            check(child)


def _widen(module: nn.Module, n: int) -> None:
    """Replace, in place, every conv, BatchNorm and linear under `module` by its N-replica form."""
    for name, child in module.named_children():
        kind = _kind(child)
        if kind == "walk":
            _widen(child, n)
            continue
        if kind == "conv":
            new = nn.Conv2d(n * child.in_channels, n * child.out_channels, child.kernel_size, child.stride,
                            child.padding, child.dilation, groups=n * child.groups, bias=child.bias is not None,
                            padding_mode=child.padding_mode)
        elif kind == "bn":
            new = nn.BatchNorm2d(n * child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
        else:
            new = StackedLinear(n, child.in_features, child.out_features)
        setattr(module, name, new)


class Stacked:
    """The stacked network of N replicas (`module`) and the mapping between it and each replica."""

    def __init__(self, models: Sequence[nn.Module]):
        first = models[0]
        shapes = {k: v.shape for k, v in first.state_dict().items()}
        if any({k: v.shape for k, v in m.state_dict().items()} != shapes for m in models[1:]):
            raise UserError("replicas trained together must share one architecture (model, width, classes)")
        self.n = len(models)
        with torch.random.fork_rng(devices=[]):  # new layers draw default inits that load_from overwrites
            self.module = copy.deepcopy(first)
            _widen(self.module, self.n)
        self._batched = {f"{name}.{p}" for name, m in self.module.named_modules() if isinstance(m, StackedLinear)
                         for p in ("weight", "bias")}
        w = next(first.parameters())
        channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                            and not p.is_contiguous() for p in first.parameters())
        self.module.to(w.device, w.dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.load_from(models)

    def split(self, out: torch.Tensor) -> torch.Tensor:
        """The stacked output (B, N*classes) as logits (N, B, classes)."""
        return out.unflatten(1, (self.n, -1)).transpose(0, 1)

    def per_replica(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The stacked tensor `name` (or one shaped like it) as (N, *replica shape); row k is a view."""
        if tensor.dim() == 0:
            return tensor.expand(self.n)
        return tensor if name in self._batched else tensor.unflatten(0, (self.n, -1))

    @torch.no_grad()
    def load_from(self, models: Sequence[nn.Module]) -> None:
        """Copy every replica's parameters and buffers into its slice."""
        states = [m.state_dict() for m in models]
        self._counts_at_load = {}
        for name, t in self.module.state_dict(keep_vars=True).items():
            if t.dim() == 0:
                # num_batches_tracked: one stacked counter of batches since this load, added to each
                # replica's own count (replicas may have started at different iterations).
                self._counts_at_load[name] = [state[name].clone() for state in states]
                t.zero_()
                continue
            rows = self.per_replica(name, t)
            for k, state in enumerate(states):
                rows[k].copy_(state[name])

    @torch.no_grad()
    def write_to(self, models: Sequence[nn.Module]) -> None:
        """Copy each slice back into its replica's parameters and buffers (in place, keeping their layout)."""
        states = [m.state_dict(keep_vars=True) for m in models]
        for name, t in self.module.state_dict(keep_vars=True).items():
            if t.dim() == 0:
                for k, state in enumerate(states):
                    state[name].copy_(self._counts_at_load[name][k] + t)
                continue
            rows = self.per_replica(name, t)
            grads = self.per_replica(name, t.grad) if isinstance(t, nn.Parameter) and t.grad is not None else None
            for k, state in enumerate(states):
                state[name].copy_(rows[k])
                if grads is not None:  # hooks (early-phase statistics) read the last step's gradient
                    if state[name].grad is None:
                        state[name].grad = torch.empty_like(state[name])
                    state[name].grad.copy_(grads[k])

"""N CIFAR ResNets of one architecture as a single network, so N trainings share every kernel launch.

The input is the N replicas' batches concatenated along channels, (B, N*3, H, W), replica k in
channels [3k, 3k+3). Every conv becomes a grouped conv (groups=N) whose weight stacks the N
replicas' weights along out-channels, so group k sees only replica k's channels; every
BatchNorm2d becomes one BatchNorm2d over N*C channels, which is exactly per-replica BatchNorm
because BatchNorm is per channel; ReLU, the residual sum and the average pool are per channel
too. The fc is a batched matmul; the output is logits (N, B, classes).

Parameter mapping: the stacked model has the same parameter and buffer names as each replica,
and `per_replica(name, tensor)` views a stacked tensor as (N, *replica shape), row k being
replica k's tensor of that name:

- conv weight   (N*out, in, kh, kw): rows [k*out, (k+1)*out) along dim 0
- BatchNorm weight, bias, running_mean, running_var (N*C,): entries [k*C, (k+1)*C)
- fc.weight (N, classes, features) and fc.bias (N, classes): index k along dim 0
- BatchNorm num_batches_tracked: one count of the batches since `load_from`, added to each
  replica's own count when written back (the replicas step together from then on)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from rewind.errors import UserError
from rewind.models.resnet import CifarResNet


class StackedLinear(nn.Module):
    """N linear layers: (B, N*in) -> (N, B, out), replica k reading features [k*in, (k+1)*in)."""

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.n = n
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(1, (self.n, -1)).transpose(0, 1)  # (N, B, in)
        # baddbmm is the batched form of the addmm nn.Linear runs, so rounding stays close to it.
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def _widen(module: nn.Module, n: int) -> None:
    """Replace, in place, every conv, BatchNorm and linear under `module` by its N-replica form."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            if child.groups != 1 or child.bias is not None:
                raise ValueError("only plain bias-free convs can be stacked")
            new = nn.Conv2d(n * child.in_channels, n * child.out_channels, child.kernel_size, child.stride,
                            child.padding, child.dilation, groups=n, bias=False)
        elif isinstance(child, nn.BatchNorm2d):
            new = nn.BatchNorm2d(n * child.num_features, child.eps, child.momentum)
        elif isinstance(child, nn.Linear):
            new = StackedLinear(n, child.in_features, child.out_features)
        else:
            _widen(child, n)
            continue
        setattr(module, name, new)


class StackedResNet(CifarResNet):
    """N `CifarResNet`s of one shape; CifarResNet's forward runs unchanged on the widened layers."""

    def __init__(self, n: int, depth: int, width: int, num_classes: int):
        # Construction draws default inits that load_from overwrites; keep them off the global RNG.
        with torch.random.fork_rng(devices=[]):
            super().__init__(depth, width, num_classes)
            _widen(self, n)
        self.n = n
        self._batched = {f"fc.{p}" for p in ("weight", "bias")}

    @classmethod
    def of(cls, models: Sequence[CifarResNet]) -> "StackedResNet":
        """A stacked copy of `models`, on their device, dtype and memory format."""
        first = models[0]
        shapes = {k: v.shape for k, v in first.state_dict().items()}
        if any({k: v.shape for k, v in m.state_dict().items()} != shapes for m in models[1:]):
            raise UserError("replicas trained together must share one architecture (model, width, classes)")
        stacked = cls(len(models), 2 * len(first.blocks) + 2, first.conv.out_channels, first.fc.out_features)
        w = first.conv.weight
        channels_last = w.is_contiguous(memory_format=torch.channels_last)
        stacked.to(w.device, w.dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        stacked.load_from(models)
        return stacked

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
        for name, t in self.state_dict(keep_vars=True).items():
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
        for name, t in self.state_dict(keep_vars=True).items():
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

"""Batched deep linear networks: many bias-free chains W_D ... W_1 trained as one tensor program.

A `Chains` holds B independent chains of D linear maps; layer l of every chain is one [B, out, in]
tensor, so a forward pass is D-1 batched matmuls and a gradient step 2(D-1) more, whatever B is
(the arms of a sweep, their pathways and their seeds). The inputs are the identity (one-hot items;
in completion, the rows of the matrix), fed as rows as in `nn.Linear` (h = x W^T), so a chain's
output is H = (W_D ... W_1)^T: item by output feature. Gradients are backpropagation written out,
not autograd (no graph to build), each layer updated in place by one fused batched matmul.
"""

from __future__ import annotations

import torch


class Chains:
    """B chains of D layers; `layers[l]` is [B, n_{l+1}, n_l] (layer 0 meets the input)."""

    def __init__(self, layers: list[torch.Tensor]):
        self.layers = layers

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self) -> list[torch.Tensor]:
        """The activations on the identity inputs, H_l = H_{l-1} W_l^T with H_1 = W_1^T: [B, n_0, n_l];
        the last, [B, inputs, outputs], is the output H = (W_D ... W_1)^T."""
        acts = [self.layers[0].transpose(1, 2)]
        for w in self.layers[1:]:
            acts.append(torch.bmm(acts[-1], w.transpose(1, 2)))
        return acts

    def descend(self, acts: list[torch.Tensor], grad: torch.Tensor, lr: float) -> None:
        """One gradient-descent step in place, given the activations of the current weights
        (`forward()`) and dLoss/dH = `grad` [B, inputs, outputs].

        Layer l's gradient is g_l^T H_{l-1}, and g_{l-1} = g_l W_l is formed before W_l changes;
        layer 0 goes last, since H_1 is a view of it."""
        g = grad
        for l in range(self.depth - 1, 0, -1):
            below = torch.bmm(g, self.layers[l])
            self.layers[l].baddbmm_(g.transpose(1, 2), acts[l - 1], alpha=-lr)
            g = below
        self.layers[0].add_(g.transpose(1, 2), alpha=-lr)


def orthonormal_columns(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A random rows x cols matrix with orthonormal columns (float64, CPU)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def balanced_aligned(U: torch.Tensor, V: torch.Tensor, k: torch.Tensor, depth: int, width: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Layers of one chain whose end-to-end map is U diag(k) V^T, balanced (W_{l+1}^T W_{l+1} = W_l W_l^T)
    and aligned with the task's modes: W_1 = R_1 diag(p) V^T, W_l = R_l diag(p) R_{l-1}^T,
    W_D = U diag(p) R_{D-1}^T with p = k^(1/D) and random orthonormal R_l (width x modes).

    Gradient descent from here keeps every layer in this form, each mode's p following
    p <- p + lr * p^(D-1) * (S - K): the per-mode dynamics of `dynamics.py` (float64, CPU)."""
    p = torch.diag(k ** (1.0 / depth))
    bases = [V] + [orthonormal_columns(width, k.numel(), generator) for _ in range(depth - 1)] + [U]
    return [bases[l + 1] @ p @ bases[l].T for l in range(depth)]


def gaussian(sizes: list[int], std: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Layers n_0 -> n_1 -> ... -> n_D with independent N(0, std^2) entries (float64, CPU)."""
    return [torch.randn(sizes[l + 1], sizes[l], generator=generator, dtype=torch.float64) * std
            for l in range(len(sizes) - 1)]

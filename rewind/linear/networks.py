"""Batched deep linear networks: many bias-free chains W_D ... W_1 trained as one tensor program.

A `Chains` holds B independent chains of D linear maps; layer l of every chain is one [B, out, in]
tensor, so a forward pass is D-1 batched matmuls and a gradient step 2(D-1) more, whatever B is
(the arms of a sweep, their pathways and their seeds). The inputs are the identity (one-hot items;
in completion, the rows of the matrix), fed as rows as in `nn.Linear` (h = x W^T), so a chain's
output is H = (W_D ... W_1)^T: item by output feature. Gradients are backpropagation written out,
not autograd (no graph to build), each layer updated in place by one fused batched matmul.

With an elementwise nonlinearity (tanh or ReLU) every layer's output passes through it, the last
one's included, as the authors' `MultipathwayNet` applies it (Kleinman et al. 2024, Fig. 11-12).
"""

from __future__ import annotations

import torch


NONLINEARITIES = ("none", "tanh", "relu")


class Chains:
    """B chains of D layers; `layers[l]` is [B, n_{l+1}, n_l] (layer 0 meets the input); `nonlinearity`
    one of NONLINEARITIES, applied to every layer's output."""

    def __init__(self, layers: list[torch.Tensor], nonlinearity: str = "none"):
        self.layers = layers
        self.nonlinearity = nonlinearity

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self) -> list[torch.Tensor]:
        """The activations on the identity inputs, H_l = H_{l-1} W_l^T with H_1 = W_1^T: [B, n_0, n_l];
        the last, [B, inputs, outputs], is the output H = (W_D ... W_1)^T."""
        if self.nonlinearity != "none":
            return self._forward_nonlinear()
        acts = [self.layers[0].transpose(1, 2)]
        for w in self.layers[1:]:
            acts.append(torch.bmm(acts[-1], w.transpose(1, 2)))
        return acts

    def _forward_nonlinear(self) -> list[torch.Tensor]:
        act = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        acts = [act(self.layers[0].transpose(1, 2))]
        for w in self.layers[1:]:
            acts.append(act(torch.bmm(acts[-1], w.transpose(1, 2))))
        return acts

    def _through(self, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """dLoss/d(pre-activation) from dLoss/d(output) of a layer whose output is `out`."""
        if self.nonlinearity == "tanh":
            return g * (1 - out * out)
        if self.nonlinearity == "relu":
            return g * (out > 0)
        return g

    def descend(self, acts: list[torch.Tensor], grad: torch.Tensor, lr: float) -> None:
        """One gradient-descent step in place, given the activations of the current weights
        (`forward()`) and dLoss/dH = `grad` [B, inputs, outputs].

        Layer l's gradient is g_l^T H_{l-1}, and g_{l-1} = g_l W_l is formed before W_l changes;
        layer 0 goes last, since H_1 is a view of it."""
        g = grad
        for l in range(self.depth - 1, 0, -1):
            g = self._through(g, acts[l])
            below = torch.bmm(g, self.layers[l])
            self.layers[l].baddbmm_(g.transpose(1, 2), acts[l - 1], alpha=-lr)
            g = below
        g = self._through(g, acts[0])
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


def balanced_shared_basis(U: torch.Tensor, V: torch.Tensor, k: torch.Tensor, depth: int,
                          R: torch.Tensor) -> list[torch.Tensor]:
    """The authors' form of the balanced aligned init (`multipath/multichannel_net_diag.py`): one
    width x width orthogonal R for every hidden layer and all `width` values of k, p = k^(1/D):
    W_1 = R diag(p)[:, :M] V^T, W_l = R diag(p) R^T, W_D = U diag(p)[:M, :] R^T (M = the task's modes).

    The end-to-end map is U diag(k[:M]) V^T as in `balanced_aligned`; the hidden-to-hidden layers also
    pass the other width - M directions (singular values p), which a linear network never excites but
    a nonlinear one does (float64, CPU)."""
    modes = U.shape[1]
    p = torch.diag(k ** (1.0 / depth))
    first, last = R @ p[:, :modes] @ V.T, U @ p[:modes, :] @ R.T
    return [first] + [R @ p @ R.T for _ in range(depth - 2)] + [last] if depth > 1 else [U @ p[:modes, :modes] @ V.T]


def gaussian(sizes: list[int], std: float, generator: torch.Generator) -> list[torch.Tensor]:
    """Layers n_0 -> n_1 -> ... -> n_D with independent N(0, std^2) entries (float64, CPU)."""
    return [torch.randn(sizes[l + 1], sizes[l], generator=generator, dtype=torch.float64) * std
            for l in range(len(sizes) - 1)]

"""The analytical dynamics of a deep factorisation's end-to-end map: gradient flow, integrated.

For a product W = W_D ... W_1 of balanced layers (W_{l+1}^T W_{l+1} = W_l W_l^T, which gradient flow
keeps, and which the identity and orthogonal inits are), the end-to-end map follows its own flow
(Arora, Cohen and Hazan 2018, Thm. 1)

    dW/dt = -sum_{j=1..D} (W W^T)^((D-j)/D) G (W^T W)^((j-1)/D),     G = dLoss/dW,

and in W = U diag(s) V^T its singular values follow ds_r/dt = -D s_r^(2-2/D) (U^T G V)_rr (Arora,
Cohen, Golowich and Hu 2019, Thm. 3), their vectors Lemma 2 of the same paper: the authors'
`matrixcompletion/analytical_singular_vectors_and_sim.py` steps (s, U, V) by those equations. Here
the same flow is written in the singular basis, U^T dW V = -C * (U^T G V) with C_rr' =
sum_j s_r^(2(D-j)/D) s_r'^(2(j-1)/D), which needs no division by s_r^(2/D) - s_r'^(2/D) (the
authors' F, unbounded where singular values meet, as they do at an identity init). One Euler step
per gradient step (t in steps of lr), as theirs: gradient descent on the layers and Euler on W are
two first-order discretisations of one flow. float64 on the CPU.
"""

from __future__ import annotations

import torch


def _coefficients(s: torch.Tensor, depth: int) -> torch.Tensor:
    """C_rr' = sum_{j=1..D} s_r^(2(D-j)/D) s_r'^(2(j-1)/D)."""
    powers = [(2 * (depth - j) / depth, 2 * (j - 1) / depth) for j in range(1, depth + 1)]
    return sum(torch.outer(s ** a, s ** b) for a, b in powers)


def velocity(W: torch.Tensor, grad: torch.Tensor, depth: int) -> torch.Tensor:
    """dW/dt of the end-to-end flow at W, given the loss gradient G at W."""
    if depth == 1:
        return -grad
    U, s, Vh = torch.linalg.svd(W)
    return -U @ (_coefficients(s, depth) * (U.T @ grad @ Vh.T)) @ Vh


def integrate(W: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, depth: int, lr: float, steps: int,
              record_every: int, top: int, start: int = 0) -> tuple[torch.Tensor, list[tuple[int, list[float]]]]:
    """`steps` Euler steps of the flow on the loss 0.5 * sum(weight * (W - target)^2) (weight: 1/count on
    the observed entries) from W at step `start`: (W at the end, [(step, top singular values)] at the
    multiples of record_every and the two ends)."""
    W = W.double().clone()
    target, weight = target.double(), weight.double()
    rows = []
    for t in range(steps + 1):
        step = start + t
        if step % record_every == 0 or t in (0, steps):
            rows.append((step, torch.linalg.svdvals(W)[:top].tolist()))
        if t < steps:
            W = W + lr * velocity(W, weight * (W - target), depth)
    return W, rows

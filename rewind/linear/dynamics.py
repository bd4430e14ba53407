"""The analytical singular-value dynamics of balanced deep linear networks, integrated numerically.

A balanced network aligned with the task's modes stays so under gradient flow, and each mode's
singular value K of a depth-D pathway obeys (Saxe et al. 2014 for D = 2; Arora et al. 2019)

    dK/dt = lr * D * K^(2 - 2/D) * (S - K),            t in gradient steps.

With P pathways whose outputs add, they share the residual: dK_p/dt = lr * D * K_p^(2 - 2/D) *
(S - sum_q K_q), and a gated pathway (no gradient, its output still counts) is held fixed. These
are integrated with classical Runge-Kutta (`substeps` per gradient step, gates switching on step
boundaries), so the curve is the gradient *flow*; gradient descent at step size lr is its Euler
discretisation and differs by O(lr).

A feature lesion (the authors' `gate_sing`) takes one mode out of pathway a for good: its K_a is
held fixed and no longer counts in the residual of that mode, which the other pathways then share.
"""

from __future__ import annotations

import numpy as np


def balanced_trajectories(S: np.ndarray, k0: np.ndarray, depth: int, lr: float, record: list[int],
                          windows: list[tuple[int, int] | None], gated: int = 1,
                          substeps: int = 2, lesion: int | None = None) -> np.ndarray:
    """K at each step in `record` (sorted, from 0): [len(record), A, P, M].

    S: [M] mode strengths; k0: [A, P, M] initial per-mode singular values (>= 0), A arms of P
    pathways; windows[a]: the steps [start, end) during which arm a's pathway `gated` is held fixed,
    or None; lesion: the mode (0-based) that pathway 0 has lost in every arm, or None."""
    K = np.array(k0, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    arms, paths, _ = K.shape
    power = 2.0 - 2.0 / depth
    starts = np.array([w[0] if w else -1 for w in windows])
    ends = np.array([w[1] if w else -1 for w in windows])
    learn = np.ones((arms, paths, K.shape[2]))
    counts = np.ones((1, paths, K.shape[2]))
    if lesion is not None:
        counts[0, 0, lesion] = 0.0
    h = 1.0 / substeps

    def rate(k: np.ndarray) -> np.ndarray:
        residual = S - (k * counts).sum(axis=1, keepdims=True)
        return lr * depth * np.power(np.maximum(k, 0.0), power) * residual * learn * counts

    out = np.empty((len(record), arms, paths, K.shape[2]))
    stop = record[-1]
    r = 0
    for t in range(stop + 1):
        while r < len(record) and record[r] == t:
            out[r] = K
            r += 1
        if t == stop:
            break
        if paths > gated:
            learn[:, gated, :] = ~((starts <= t) & (t < ends))[:, None]
        for _ in range(substeps):
            a = rate(K)
            b = rate(K + 0.5 * h * a)
            c = rate(K + 0.5 * h * b)
            d = rate(K + h * c)
            K = K + h / 6.0 * (a + 2 * b + 2 * c + d)
    return out


def saxe_solution(S: np.ndarray, k0: np.ndarray, lr: float, steps: np.ndarray) -> np.ndarray:
    """The closed form at depth 2, one pathway: K(t) = S / (1 + (S/k0 - 1) exp(-2 S lr t))."""
    t = np.asarray(steps, dtype=np.float64)[:, None]
    return S / (1.0 + (S / k0 - 1.0) * np.exp(-2.0 * S * lr * t))


def crossing(steps: np.ndarray, values: np.ndarray, level: float) -> float:
    """The first step at which `values` reaches `level`, interpolated linearly (nan if never)."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    above = np.nonzero(values >= level)[0]
    if not len(above):
        return float("nan")
    i = above[0]
    if i == 0:
        return float(steps[0])
    v0, v1 = values[i - 1], values[i]
    return float(steps[i - 1] + (level - v0) / (v1 - v0) * (steps[i] - steps[i - 1]))

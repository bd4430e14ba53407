"""Phase portraits of one mode shared by two pathways: the analytical model of Kleinman et al. 2024
(Fig. 1 with a large init, Fig. 7 with a small one), as the authors' `multipath/phase-large-init.py`
and `phase-small-init.py` compute it. Pure functions of numpy arrays; nothing is trained.

Each pathway's mode is a chain of D scalars; balanced ones keep q^2 - p^2 = c between its first
layer p and the others q (c = 0 from a small, balanced init; c = 1 from the large init), so its
singular value is K(p) = p (p^2 + c)^((D-1)/2) and gradient flow on 0.5 (S - K_a - K_b)^2 reads

    dp/dt = (p^2 + c)^((D-1)/2) * (S - K_a - K_b),   hence   dK/dt = (p^2 + c)^(D-2) (D p^2 + c) * (S - K_a - K_b)

(the flow field drawn). A trajectory is the authors' Euler map on p, pathway b held fixed during a
deficit window of updates [start, end) (0-based: update t takes the state after t updates to t + 1;
the authors' loop numbers the states from 1, so their window (0, 15) holds b for 14 updates, [0, 14)
here).
"""

from __future__ import annotations

import numpy as np

SMALL, LARGE = 0.0, 1.0  # c, the constant of motion q^2 - p^2


def k_of_p(p: np.ndarray, depth: np.ndarray | int, c: float) -> np.ndarray:
    """K = p (p^2 + c)^((D-1)/2), odd in p."""
    p = np.asarray(p, dtype=np.float64)
    return p * np.power(p * p + c, (np.asarray(depth) - 1) / 2)


def p_of_k(K: np.ndarray, depth: int, c: float) -> np.ndarray:
    """The inverse of `k_of_p` for K >= 0 (bisection, to float64 rounding)."""
    K = np.asarray(K, dtype=np.float64)
    if c == 0:
        return np.power(K, 1.0 / depth)
    lo, hi = np.zeros_like(K), np.maximum(K, 1.0)  # K >= p where c = 1
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = k_of_p(mid, depth, c) < K
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def flow_field(KA: np.ndarray, KB: np.ndarray, depth: int, S: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    """(dK_a/dt, dK_b/dt) of the deficit-free flow on a grid of K >= 0."""
    def rate(K: np.ndarray) -> np.ndarray:
        p = p_of_k(K, depth, c)
        return np.power(p * p + c, depth - 2) * (depth * p * p + c)

    omega = S - KA - KB
    return rate(KA) * omega, rate(KB) * omega


def trajectories(p0: np.ndarray, depths: np.ndarray, S: float, c: float, dt: float, steps: int,
                 windows: np.ndarray, every: int = 1) -> np.ndarray:
    """Euler trajectories of many systems at once: K [steps // every + 1, n, 2] (every `every` updates,
    the last included).

    p0 [n, 2]: the first layer's value of pathway a and b; depths [n]; windows [n, 2]: the updates
    [start, end) during which pathway b is held fixed. At rest, float64 Euler settles into a cycle of
    one or two states (the last bit alternating); once every system is in one, the states are carried
    to the next window boundary at once: the numbers stepping there gives, without the steps (the
    small-init model rests for most of its 1M updates)."""
    p = np.array(p0, dtype=np.float64)
    depths = np.asarray(depths, dtype=np.float64)[:, None]
    start, end = np.asarray(windows)[:, 0], np.asarray(windows)[:, 1]
    events = np.unique(np.concatenate([start, end, [steps]]))
    half = (depths - 1) / 2
    K = k_of_p(p, depths, c)
    out = [K]
    before, learned_before = None, None  # the state one update back, and the gating of that update
    t = 0
    while t < steps:
        learn = np.ones_like(p)
        learn[:, 1] = ~((start <= t) & (t < end))
        moved = p + dt * np.power(p * p + c, half) * (S - K.sum(axis=1, keepdims=True)) * learn
        if before is not None and np.array_equal(moved, before) and np.array_equal(learn, learned_before):
            nxt = int(events[events > t][0])  # states alternate p, moved, p, ... until the gating changes
            states = (K, k_of_p(moved, depths, c))
            out += [states[(tau - t) % 2] for tau in range(t + 1, nxt + 1) if tau % every == 0 or tau == steps]
            even = (nxt - t) % 2 == 0
            p, before = (p, moved) if even else (moved, p)
            K, t = states[0 if even else 1], nxt
            learned_before = None  # the next update may be gated otherwise
            continue
        before, learned_before = p, learn
        p, t = moved, t + 1
        K = k_of_p(p, depths, c)
        if t % every == 0 or t == steps:
            out.append(K)
    return np.stack(out)


def final_share(K: np.ndarray) -> np.ndarray:
    """Pathway b's share K_b / (K_a + K_b) at the end of each trajectory [n]."""
    last = K[-1]
    return last[:, 1] / last.sum(axis=1)

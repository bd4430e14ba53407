"""The deep-linear tasks: the hierarchical 8-item task and its modes; low-rank matrix completion.

Hierarchical task (Saxe et al.; Kleinman et al. 2024, Fig. 1-3): 8 one-hot items, 15 binary
features (1 shared by all items, 2 halves, 4 pairs, 8 singletons). With inputs X = I_8 the network's
end-to-end map W (15 x 8) is its output for every item, the loss is 0.5 * ||W - Y||_F^2 with
Y = the 15 x 8 feature matrix, and the modes are Y's SVD: S = sqrt(15), sqrt(7), sqrt(3) (twice),
1 (four times).

Matrix completion (Kleinman et al. 2024, Sec. 5): N x N targets M = A B^T / sqrt(r) with Gaussian
A, B (N x r), rescaled to ||M||_F = N (entries of unit mean square), observed on a fixed random set
of entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewind import seeds


def hierarchical_features() -> torch.Tensor:
    """Y: 15 features x 8 items (float64): root, two halves, four pairs, eight singletons."""
    rows = [[1.0] * 8]
    for size in (4, 2, 1):
        for start in range(0, 8, size):
            rows.append([1.0 if start <= i < start + size else 0.0 for i in range(8)])
    return torch.tensor(rows, dtype=torch.float64)


@dataclass(frozen=True)
class Modes:
    """Y = U diag(S) V^T restricted to its 8 modes (U: 15 x 8, S: 8, V: 8 x 8), strongest first."""

    Y: torch.Tensor
    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def hierarchical_modes() -> Modes:
    """The task and its SVD, computed on the CPU in float64 so that every run gets the same modes (the
    degenerate ones included). A mode's K = u^T W v does not depend on the signs LAPACK picks."""
    Y = hierarchical_features()
    U, S, Vh = torch.linalg.svd(Y, full_matrices=False)
    return Modes(Y, U.contiguous(), S, Vh.T.contiguous())


def authors_modes() -> Modes:
    """The same task with the modes' vectors as the authors' code computes them (`multipath/utils.py`:
    torch.svd of the 15 x 8 input-output correlation in float32), in float64. The degenerate modes
    (sqrt 3 twice, 1 four times) have other vectors than `hierarchical_modes`' within their subspaces:
    a linear network aligned with either learns the same K, a nonlinear one does not."""
    modes = hierarchical_modes()
    U, _, V = torch.svd(modes.Y.float() / 8, some=False)
    return Modes(modes.Y, U[:, :8].double().contiguous(), modes.S, V.double().contiguous())


def low_rank_target(n: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """M = A B^T / sqrt(rank), rescaled to ||M||_F = n (float64)."""
    a = torch.randn(n, rank, generator=generator, dtype=torch.float64)
    b = torch.randn(n, rank, generator=generator, dtype=torch.float64)
    m = a @ b.T / rank ** 0.5
    return m * (n / torch.linalg.matrix_norm(m))


def observation_order(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random order of the n*n entries (flat indices); the first k are the k observed entries, so a
    smaller set is always a subset of a larger one."""
    return torch.randperm(n * n, generator=generator)


def mask_of(order: torch.Tensor, count: int, n: int) -> torch.Tensor:
    """The 0/1 n x n mask (float64) of the first `count` entries of `order`."""
    mask = torch.zeros(n * n, dtype=torch.float64)
    mask[order[:count]] = 1.0
    return mask.view(n, n)


@dataclass(frozen=True)
class CompletionTasks:
    """Both tasks of one seed: targets and observation masks (float64, CPU)."""

    target1: torch.Tensor
    mask1: torch.Tensor
    target2: torch.Tensor
    mask2: torch.Tensor


def completion_tasks(n: int, task1_rank: int, task2_rank: int, observations: int, subset_observations: int,
                     seed: int) -> CompletionTasks:
    """Task 1 and task 2 of `seed`: independent low-rank targets on the same observed entries, or, in the
    subset variant (`subset_observations` > 0), task 2's own target on the first entries only."""
    target2 = low_rank_target(n, task2_rank, seeds.generator("linear-completion", "task2", seed))
    order = observation_order(n, seeds.generator("linear-completion", "observations", seed))
    mask2 = mask_of(order, observations, n)
    if subset_observations:
        return CompletionTasks(target2, mask_of(order, subset_observations, n), target2, mask2)
    target1 = low_rank_target(n, task1_rank, seeds.generator("linear-completion", "task1", seed))
    return CompletionTasks(target1, mask2, target2, mask2)

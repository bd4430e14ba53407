"""Linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

Two children start from the trunk's weights at iteration k and train to the end of the trunk's
plan under different samples of SGD noise; they are linearly connected when the test error
along the straight line between them does not rise above the line between their errors.

Definitions (error = 1 - test accuracy, in [0, 1]):

- SGD noise (`noise`): as Frankle et al. define it, the data order and the augmentation: child
  i draws both from seeds of its own (`child_seeds`: order and augmentation seeds 1 and 2, so
  the two see other crops and flips of each example in each epoch). `order-only` keeps the
  trunk's augmentation seed for both, so they see the same crops in another order;
- path point alpha: every floating tensor is `lerp(a, b, alpha)` = (1 - alpha) a + alpha b
  (exactly a at alpha = 0 and exactly b at alpha = 1); 30 evenly spaced points by default, as
  in Frankle et al. (2020);
- BatchNorm (`bn`): `recompute` (the default, rewind's choice) resets the running statistics at
  every point and recomputes them for the interpolated weights (a cumulative average over the
  same fixed training batches, in train mode, without gradients) before the test set is
  evaluated in eval mode, since interpolated statistics do not describe the interpolated
  network; the endpoints are recomputed too, so the whole curve is measured one way.
  `interpolate` evaluates with the interpolated running statistics as they are;
- barrier = max(0, max over alpha of err(alpha) - (err(0) + err(1)) / 2): the rise above the
  mean of the endpoints' errors, as in Frankle et al. (2020); 0 for two identical children.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from rewind.analysis.archive import reopen
from rewind.train.early import load_weights
from rewind.archive.run import Run
from rewind.data.loader import DeviceLoader, Normalizer
from rewind.errors import UserError
from rewind.prune.masks import Masks
from rewind.train import loop
from rewind.train.evaluate import evaluate
from rewind.train.trunk import Setup

Batches = Sequence[tuple[Tensor, Tensor]]

NOISE = ("order-and-augmentation", "order-only")
BN_MODES = ("recompute", "interpolate")
ORDER_SEEDS = (1, 2)  # the children's data-order seeds (and augmentation seeds, by default)
POINTS = 30


def child_seeds(noise: str, trunk_aug_seed: int, order_seeds: Sequence[int] = ORDER_SEEDS) -> list[tuple[int, int]]:
    """(order seed, augmentation seed) of each child: its own of both, or the trunk's augmentation seed."""
    if noise not in NOISE:
        raise UserError(f"noise must be one of {', '.join(NOISE)}; got {noise!r}")
    return [(seed, seed if noise == "order-and-augmentation" else trunk_aug_seed) for seed in order_seeds]


def interpolate(sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1 - alpha) a + alpha b for floating tensors; integer ones (BatchNorm counters) from `a`."""
    return {k: torch.lerp(a, sd_b[k].to(a.device), alpha) if a.is_floating_point() else a.clone()
            for k, a in sd_a.items()}


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Batches) -> None:
    """Running statistics = the cumulative average over `batches` (normalised images, labels)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average, so every batch weighs the same
    was_training = model.training
    model.train()
    for x, _ in batches:
        model(x)
    model.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def bn_batches_from(loader_or_batches: DeviceLoader | Iterable[tuple[Tensor, Tensor]], count: int) -> Batches:
    """`count` training batches, fixed once: iterations 0.. of a loader (augmented), or the first of an iterable."""
    if isinstance(loader_or_batches, DeviceLoader):
        return [loader_or_batches.batch(i) for i in range(count)]
    out = []
    for batch in loader_or_batches:
        if len(out) == count:
            break
        out.append(batch)
    return out


@dataclass
class Connectivity:
    alphas: list[float]
    errors: list[float]
    losses: list[float]
    barrier: float
    bn: str = "recompute"  # how BatchNorm statistics were set at each point

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"bn": self.bn, "alpha": self.alphas, "test_error": self.errors,
                             "test_loss": self.losses})


def barrier(model_factory: Callable[[], nn.Module], sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor],
            train_loader_or_batches: DeviceLoader | Iterable[tuple[Tensor, Tensor]], test_images: Tensor,
            test_labels: Tensor, normalize: Normalizer, points: int = POINTS, bn_batches: int = 40,
            bn: str = "recompute") -> Connectivity:
    """Test error at `points` evenly spaced alphas in [0, 1] and the barrier (module docstring).

    With `bn` recompute, BatchNorm statistics come from the first `bn_batches` training batches,
    the same for every point; with interpolate, the interpolated ones are used as they are.
    """
    if bn not in BN_MODES:
        raise UserError(f"bn must be one of {', '.join(BN_MODES)}; got {bn!r}")
    batches = bn_batches_from(train_loader_or_batches, bn_batches) if bn == "recompute" else []
    model = model_factory()
    alphas = torch.linspace(0, 1, points).tolist()
    errors, losses = [], []
    for alpha in alphas:
        load_weights(model, interpolate(sd_a, sd_b, alpha))
        if bn == "recompute":
            recompute_bn(model, batches)
        result = evaluate(model, test_images, test_labels, normalize)
        errors.append(1.0 - result["acc"])
        losses.append(result["loss"])
    # Frankle et al. (2020): the highest error on the path above the mean of the endpoints' errors.
    return Connectivity(alphas, errors, losses, max(0.0, max(errors) - (errors[0] + errors[-1]) / 2), bn)


@dataclass
class Child:
    order_seed: int
    aug_seed: int
    weights: dict[str, Tensor]
    final_test: dict[str, float]


def child_states(run: Run, setup: Setup, k: int, seeds: Sequence[tuple[int, int]], masks: Masks | None = None,
                 keep_momentum: bool = False) -> list[loop.TrainState]:
    """One training state per (order seed, augmentation seed), holding the trunk's checkpoint at iteration `k`.

    Each child starts from the trunk's weights and buffers at `k` (under `masks` if given), on
    the trunk's plan from `k` (learning rate, and schedule position after a pre-training), with a
    fresh optimizer unless `keep_momentum` (then the trunk's momentum at `k`, which needs its
    `.state.pt`). Only the seeds differ (`child_seeds`).
    """
    trunk = run.stage("trunk").load(k, with_state=keep_momentum)
    states = []
    for order_seed, aug_seed in seeds:
        child_setup = dataclasses.replace(setup, config=setup.config.with_values(order_seed=order_seed,
                                                                                 aug_seed=aug_seed))
        model = setup.new_model()
        trunk.into(model)
        state = child_setup.state(model)
        if masks is not None:
            state = dataclasses.replace(state, masks=masks)  # __post_init__ masks the weights
        if keep_momentum:
            trunk.optimizer_into(state.optimizer)
        states.append(state)
    return states


def train_children(run_root: str | Path, k: int, noise: str = "order-and-augmentation",
                   order_seeds: Sequence[int] = ORDER_SEEDS, masks: Masks | None = None, keep_momentum: bool = False,
                   overrides: dict[str, Any] | None = None) -> tuple[Setup, list[Child]]:
    """Train one child per order seed (`child_seeds`, `child_states`) in memory from iteration `k` to the plan's end.

    Returns the trunk's Setup (for `barrier`) and the children. (`rewind stability` trains them
    as segments of a branch instead, which write checkpoints and resume.)
    """
    run, setup = reopen(run_root, overrides)
    seeds = child_seeds(noise, setup.config.train.aug_seed, order_seeds)
    children = []
    for (order_seed, aug_seed), state in zip(seeds, child_states(run, setup, k, seeds, masks, keep_momentum)):
        loop.run(state, k, setup.plan.total, hooks=[])
        final_test = evaluate(state.model, *setup.test, state.loader.normalize)
        weights = {n: v.detach().clone() for n, v in state.model.state_dict().items()}
        children.append(Child(order_seed, aug_seed, weights, final_test))
    return setup, children


def trunk_barrier(setup: Setup, weights_a: Mapping[str, Tensor], weights_b: Mapping[str, Tensor],
                  points: int = POINTS, bn_batches: int = 40, bn: str = "recompute") -> Connectivity:
    """`barrier` between two children of a trunk; recomputed BatchNorm statistics come from the
    trunk's own first `bn_batches` training batches."""
    loader = setup.train_loader()
    return barrier(setup.new_model, weights_a, weights_b, loader, *setup.test, loader.normalize, points, bn_batches,
                   bn)

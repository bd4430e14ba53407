"""Linear mode connectivity (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

Two children start from the trunk's weights at iteration k and train to the end of the trunk's
plan with different data orders; they are linearly connected when the test error along the
straight line between them does not rise above the line between their errors.

Definitions (error = 1 - test accuracy, in [0, 1]):

- path point alpha: every floating tensor is `lerp(a, b, alpha)` = (1 - alpha) a + alpha b
  (exactly a at alpha = 0 and exactly b at alpha = 1);
- at every point, the BatchNorm running statistics are recomputed for the interpolated
  weights (reset, then a cumulative average over the same fixed training batches, in train
  mode, without gradients) before the test set is evaluated in eval mode. Interpolated running
  statistics do not describe the interpolated network, so none are kept; the endpoints are
  recomputed too so that the whole curve, endpoints included, is measured one way;
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
from rewind.analysis.early import load_weights
from rewind.archive.run import Run
from rewind.data.loader import DeviceLoader, Normalizer
from rewind.prune.masks import Masks
from rewind.train import loop
from rewind.train.evaluate import evaluate
from rewind.train.trunk import Setup

Batches = Sequence[tuple[Tensor, Tensor]]


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

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"alpha": self.alphas, "test_error": self.errors, "test_loss": self.losses})


def barrier(model_factory: Callable[[], nn.Module], sd_a: Mapping[str, Tensor], sd_b: Mapping[str, Tensor],
            train_loader_or_batches: DeviceLoader | Iterable[tuple[Tensor, Tensor]], test_images: Tensor,
            test_labels: Tensor, normalize: Normalizer, points: int = 11, bn_batches: int = 40) -> Connectivity:
    """Test error at `points` evenly spaced alphas in [0, 1] and the barrier (module docstring).

    BatchNorm statistics come from the first `bn_batches` training batches, the same for every point.
    """
    batches = bn_batches_from(train_loader_or_batches, bn_batches)
    model = model_factory()
    alphas = torch.linspace(0, 1, points).tolist()
    errors, losses = [], []
    for alpha in alphas:
        load_weights(model, interpolate(sd_a, sd_b, alpha))
        recompute_bn(model, batches)
        result = evaluate(model, test_images, test_labels, normalize)
        errors.append(1.0 - result["acc"])
        losses.append(result["loss"])
    # Frankle et al. (2020): the highest error on the path above the mean of the endpoints' errors.
    return Connectivity(alphas, errors, losses, max(0.0, max(errors) - (errors[0] + errors[-1]) / 2))


@dataclass
class Child:
    order_seed: int
    weights: dict[str, Tensor]
    final_test: dict[str, float]


def child_states(run: Run, setup: Setup, k: int, order_seeds: Sequence[int] = (1, 2), masks: Masks | None = None,
                 keep_momentum: bool = False) -> list[loop.TrainState]:
    """One training state per order seed, holding the trunk's checkpoint at iteration `k`.

    Each child starts from the trunk's weights and buffers at `k` (under `masks` if given), on
    the trunk's LR schedule from `k`, with a fresh optimizer unless `keep_momentum` (then the
    trunk's momentum at `k`, which needs its `.state.pt`). Only the data order differs: the
    augmentation seed is the trunk's.
    """
    trunk = run.stage("trunk").load(k, with_state=keep_momentum)
    states = []
    for seed in order_seeds:
        child_setup = dataclasses.replace(setup, config=setup.config.with_values(order_seed=seed))
        model = setup.new_model()
        load_weights(model, trunk.tensors)
        state = child_setup.state(model)
        if masks is not None:
            state = dataclasses.replace(state, masks=masks)  # __post_init__ masks the weights
        if keep_momentum:
            state.optimizer.load_state_dict(trunk.state["optimizer"])
        states.append(state)
    return states


def train_children(run_root: str | Path, k: int, order_seeds: Sequence[int] = (1, 2), masks: Masks | None = None,
                   keep_momentum: bool = False, overrides: dict[str, Any] | None = None) -> tuple[Setup, list[Child]]:
    """Train one child per order seed (`child_states`) in memory from iteration `k` to the plan's end.

    Returns the trunk's Setup (for `barrier`) and the children. (`rewind stability` trains them
    as segments of a branch instead, which write checkpoints and resume.)
    """
    run, setup = reopen(run_root, overrides)
    children = []
    for seed, state in zip(order_seeds, child_states(run, setup, k, order_seeds, masks, keep_momentum)):
        loop.run(state, k, setup.plan.total, hooks=[])
        final_test = evaluate(state.model, *setup.test, state.loader.normalize)
        children.append(Child(seed, {n: v.detach().clone() for n, v in state.model.state_dict().items()}, final_test))
    return setup, children


def trunk_barrier(setup: Setup, weights_a: Mapping[str, Tensor], weights_b: Mapping[str, Tensor], points: int = 11,
                  bn_batches: int = 40) -> Connectivity:
    """`barrier` between two children of a trunk, with BatchNorm statistics recomputed on the trunk's
    own first `bn_batches` training batches."""
    loader = setup.train_loader()
    return barrier(setup.new_model, weights_a, weights_b, loader, *setup.test, loader.normalize, points, bn_batches)

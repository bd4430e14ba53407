"""Trace of the Fisher information, tr F = E_x E_{y ~ p_w(.|x)} ||grad_w log p_w(y|x)||^2.

As in Achille, Rovere and Soatto (2019): y is sampled from the model's own softmax (one label
per example, drawn under a seed), not taken from the data, so this is the Fisher of the model,
not the empirical Fisher. Per-example gradients come from torch.func (functional_call + vmap +
grad), in chunks so that memory stays bounded.

The model is evaluated in eval mode: BatchNorm normalises with its running statistics, so each
example's log-likelihood depends on that example alone. In train mode it would depend on the
rest of the batch and there would be no per-example gradient to square.

Included: every trainable parameter (conv and linear weights, the fc bias, BatchNorm gamma and
beta), reported per parameter name; `prunable_total` sums the conv and linear weights alone
(what the early-phase statistics use), `total` sums everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from rewind import models, seeds
from rewind.train.loop import Hook


@dataclass(frozen=True)
class FisherTrace:
    per_parameter: dict[str, float]  # tr F restricted to each parameter tensor
    total: float                     # over all trainable parameters
    prunable_total: float            # over conv and linear weights only
    n_examples: int


def choose_examples(n: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """Indices of the examples used: all of them, or a seeded subset of `n_examples`."""
    if n_examples is None or n_examples >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=seeds.generator(seed, "fisher-examples"))[:n_examples].sort().values


@torch.no_grad()
def sample_labels(model: nn.Module, x: torch.Tensor, seed: int, chunk_size: int = 256) -> torch.Tensor:
    """One label per example drawn from the model's softmax (model in its current mode).

    Inverse-CDF sampling with one uniform per example from one CPU stream: the labels do not
    depend on the chunk size or the device.
    """
    u = torch.rand(len(x), generator=seeds.generator(seed, "fisher-labels"), dtype=torch.float64)
    probs = torch.cat([F.softmax(model(x[i:i + chunk_size]).double(), -1).cpu()
                       for i in range(0, len(x), chunk_size)])
    cdf = probs.cumsum(-1)
    y = (cdf < u[:, None] * cdf[:, -1:]).sum(-1)  # scaled by the last entry: rounding cannot overflow
    return y.clamp_max(probs.shape[1] - 1).to(x.device)


def fisher_trace(model: nn.Module, x: torch.Tensor, n_examples: int | None = None, seed: int = 0,
                 chunk_size: int = 64, masks: dict[str, torch.Tensor] | None = None) -> FisherTrace:
    """tr F over `x` (normalised float images), or over a seeded subset of `n_examples` of them.

    `masks` (prunable weight name -> bool) leaves pruned entries out: they are not free
    parameters of a pruned network. The model's mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        x = x[choose_examples(len(x), n_examples, seed).to(x.device)]
        y = sample_labels(model, x, seed)
        params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())

        def log_likelihood(p, xi, yi):
            logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
            return -F.cross_entropy(logits, yi.unsqueeze(0))  # log p(yi | xi); vmap cannot index by yi

        per_example_grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
        sums = {k: torch.zeros((), dtype=torch.float64, device=p.device) for k, p in params.items()}
        for i in range(0, len(x), chunk_size):
            grads = per_example_grads(params, x[i:i + chunk_size], y[i:i + chunk_size])
            for k, g in grads.items():
                if masks is not None and k in masks:
                    g = g * masks[k].to(g.device, g.dtype)
                sums[k] += g.square().sum(dtype=torch.float64)
    finally:
        model.train(was_training)
    per = {k: float(s) / len(x) for k, s in sums.items()}
    prunable = set(models.prunable(model))
    return FisherTrace(per, sum(per.values()), sum(v for k, v in per.items() if k in prunable), len(x))


class FisherLog(Hook):
    """A training hook: tr F at the plan's `fisher_steps`, under split `fisher` (total and per layer).

    The examples are a fixed seeded choice of unaugmented training images, so values at
    different steps are comparable and a resumed run logs what an uninterrupted one logs.
    """

    def __init__(self, metrics, images: torch.Tensor, n_examples: int, seed: int = 0):
        self.metrics, self.n_examples, self.seed = metrics, n_examples, seed
        idx = choose_examples(len(images), n_examples, seed).to(images.device)
        self.images = images[idx]

    def at(self, step: int, state) -> None:
        if step not in state.plan.fisher_steps:
            return
        x = state.loader.normalize(self.images)
        trace = fisher_trace(state.model, x, seed=self.seed, masks=state.masks)
        per_layer = {f"layer/{k.removesuffix('.weight')}/trace": v for k, v in trace.per_parameter.items()
                     if k in models.prunable(state.model)}
        self.metrics.log("fisher", step, {"trace": trace.total, "trace_prunable": trace.prunable_total, **per_layer},
                         epoch=state.plan.epoch(step))

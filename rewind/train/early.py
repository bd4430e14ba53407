"""Early-phase statistics (Frankle, Schwab, Morcos 2020) as pure functions over state dicts.

Every weight statistic is computed on the prunable weights (conv and linear weights; BatchNorm
and biases excluded), pruned entries included as zeros, for the whole network and per layer.

Column names (the same in `early_phase.csv`, TensorBoard tags `early/<column>` and the online
hook's rows of metrics.csv). N is the number of prunable weights counted (the whole network's,
or one layer's for the per-layer columns); `ref` is the reference named by the column:

- `mean_abs_w`       sum |w| / N
- `dist_<ref>_l2`    ||w - w_ref||_2, raw (square root of the sum over all N entries)
- `dist_<ref>_rel`   ||w - w_ref||_2 / ||w_ref||_2
- `sign_diff_<ref>`  #{i : sign(w_i) != sign(w_ref_i)} / N, in [0, 1], with sign(0) = 0
- `cos_<ref>`        <w, w_ref> / (||w||_2 ||w_ref||_2), in [-1, 1]: the cosine of the angle between
                     the weights and the reference (1 at the reference itself; NaN if either is all
                     zeros); whole network: of the vectors of all N weights, not a mean of layers'
- `bn_gamma_mean`    mean of the BatchNorm weights (gamma); whole network: over all gammas pooled
- `bn_gamma_std`     their population standard deviation (divides by the count, not count - 1)
- `grad_norm`        ||dL/dw||_2 over the prunable weights, L the mean cross-entropy on a fixed
                     batch at the checkpoint's weights, BatchNorm in train mode (batch statistics,
                     as SGD sees it), without the weight-decay term
- `grad_norm_last_batch`  the same norm for the gradient SGD actually took at the previous
                     iteration (online hook only: its batch, the weights before that step)

`<ref>` is `init` (the weights at iteration 0) or `final` (the last checkpoint held). Per-layer
columns are `layer/<module>/<stat>`, e.g. `layer/blocks.0.conv1/sign_diff_init`, with the same
definitions restricted to that module (a conv or linear layer, or a BatchNorm for `bn_gamma_*`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewind import models
from rewind.train.loop import Hook, TrainState

StateDict = Mapping[str, Tensor]

# Whole-network statistics of `weight_stats(sd, init, final)` plus `grad_norm`, in table order.
STATISTICS = ("mean_abs_w", "dist_init_l2", "dist_init_rel", "sign_diff_init", "cos_init", "dist_final_l2",
              "dist_final_rel", "sign_diff_final", "cos_final", "bn_gamma_mean", "bn_gamma_std", "grad_norm")


def column(stat: str, layer: str | None = None) -> str:
    return stat if layer is None else f"layer/{layer}/{stat}"


def layer_of(param: str) -> str:
    return param.removesuffix(".weight")


def prunable_weights(sd: StateDict) -> dict[str, Tensor]:
    """Conv and linear weights: the floating `*.weight` tensors of 2 or more dimensions.

    The same names as `rewind.models.prunable(model)`, read off a state dict so that checkpoints
    need no model; masks saved beside the weights are bool and so left out.
    """
    return {k: v for k, v in sd.items() if k.endswith(".weight") and v.is_floating_point() and v.dim() >= 2}


def bn_weights(sd: StateDict) -> dict[str, Tensor]:
    """BatchNorm gammas: the `*.weight` tensors whose module also keeps a `running_mean`."""
    return {k: v for k, v in sd.items() if k.endswith(".weight") and k[:-len("weight")] + "running_mean" in sd}


def _with_total(stat: str, per_layer: dict[str, Tensor], total: Tensor) -> dict[str, Tensor]:
    return {stat: total, **{column(stat, layer_of(k)): v for k, v in per_layer.items()}}


def mean_abs_w(weights: StateDict) -> dict[str, Tensor]:
    sums = {k: w.abs().sum() for k, w in weights.items()}
    counts = {k: w.numel() for k, w in weights.items()}
    return _with_total("mean_abs_w", {k: sums[k] / counts[k] for k in sums},
                       sum(sums.values()) / sum(counts.values()))


def distance(weights: StateDict, ref: StateDict, name: str) -> dict[str, Tensor]:
    """`dist_<name>_l2` and `dist_<name>_rel` of `weights` from `ref` (see the module docstring)."""
    sq = {k: (w.float() - ref[k].to(w.device, torch.float32)).pow(2).sum() for k, w in weights.items()}
    ref_sq = {k: ref[k].to(w.device, torch.float32).pow(2).sum() for k, w in weights.items()}
    total_sq, total_ref = sum(sq.values()), sum(ref_sq.values())
    return {**_with_total(f"dist_{name}_l2", {k: v.sqrt() for k, v in sq.items()}, total_sq.sqrt()),
            **_with_total(f"dist_{name}_rel", {k: (sq[k] / ref_sq[k]).sqrt() for k in sq},
                          (total_sq / total_ref).sqrt())}


def sign_diff(weights: StateDict, ref: StateDict, name: str) -> dict[str, Tensor]:
    """`sign_diff_<name>`: the fraction of entries whose sign differs from `ref`'s."""
    diff = {k: (w.sign() != ref[k].to(w.device).sign()).sum() for k, w in weights.items()}
    counts = {k: w.numel() for k, w in weights.items()}
    return _with_total(f"sign_diff_{name}", {k: diff[k] / counts[k] for k in diff},
                       sum(diff.values()) / sum(counts.values()))


def cosine(weights: StateDict, ref: StateDict, name: str) -> dict[str, Tensor]:
    """`cos_<name>`: the cosine similarity of `weights` and `ref` (see the module docstring).

    Sums in float64, so that the weights against themselves give exactly 1.
    """
    dot = {k: (w.double() * ref[k].to(w.device, torch.float64)).sum() for k, w in weights.items()}
    sq = {k: w.double().pow(2).sum() for k, w in weights.items()}
    ref_sq = {k: ref[k].to(w.device, torch.float64).pow(2).sum() for k, w in weights.items()}
    total = sum(dot.values()) / (sum(sq.values()) * sum(ref_sq.values())).sqrt()
    return _with_total(f"cos_{name}", {k: dot[k] / (sq[k] * ref_sq[k]).sqrt() for k in dot}, total)


def bn_gamma(sd: StateDict) -> dict[str, Tensor]:
    gammas = {k: v.float() for k, v in bn_weights(sd).items()}
    if not gammas:
        return {}
    pooled = torch.cat([g.flatten() for g in gammas.values()])
    return {**_with_total("bn_gamma_mean", {k: g.mean() for k, g in gammas.items()}, pooled.mean()),
            **_with_total("bn_gamma_std", {k: g.std(correction=0) for k, g in gammas.items()},
                          pooled.std(correction=0))}


def grad_norm_of(grads: StateDict, stat: str = "grad_norm") -> dict[str, Tensor]:
    """Per-layer L2 norms of `grads` and their total sqrt(sum of squares), under `stat`."""
    sq = {k: g.float().pow(2).sum() for k, g in grads.items()}
    return _with_total(stat, {k: v.sqrt() for k, v in sq.items()}, sum(sq.values()).sqrt())


def grad_norm(model: nn.Module, sd: StateDict, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """`grad_norm` at weights `sd` on the batch (`images` already normalised), per layer and total.

    Loads `sd` into `model` (a scratch model: its BatchNorm running statistics move).
    """
    load_weights(model, sd)
    model.train()
    names = prunable_weights(sd).keys()
    params = {k: p for k, p in model.named_parameters() if k in names}
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, list(params.values()))
    return grad_norm_of(dict(zip(params, grads)))


def load_weights(model: nn.Module, sd: StateDict) -> None:
    """Weights and buffers of `sd` into `model`, ignoring extra tensors (masks) a checkpoint holds."""
    own = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in sd.items() if k in own})


def weight_stats(sd: StateDict, init: StateDict | None = None, final: StateDict | None = None) -> dict[str, Tensor]:
    """Every weight statistic of `sd` (vs `init` and `final` when given) as 0-d tensors, no host sync.

    Whole-network columns come first, then the per-layer ones.
    """
    weights = prunable_weights(sd)
    out = mean_abs_w(weights)
    for name, ref in (("init", init), ("final", final)):
        if ref is not None:
            out |= distance(weights, ref, name) | sign_diff(weights, ref, name) | cosine(weights, ref, name)
    out |= bn_gamma(sd)
    return whole_first(out)


def whole_first(stats: dict) -> dict:
    return dict(sorted(stats.items(), key=lambda kv: kv[0].startswith("layer/")))


def to_floats(stats: Mapping[str, Tensor]) -> dict[str, float]:
    """Python floats, with a single host sync for all of them."""
    if not stats:
        return {}
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(_device(stats)) for v in stats.values()])
    return dict(zip(stats, values.tolist()))


def _device(stats: Mapping[str, Tensor]) -> torch.device:
    return next((v.device for v in stats.values() if isinstance(v, Tensor)), torch.device("cpu"))


class EarlyStats(Hook):
    """Logs the early-phase statistics under split `early` at `steps`, while training.

    `log` is a `MetricsLog` (rows in metrics.csv, TensorBoard tags `early/<column>`). The
    reference for `*_init` is `init` when given, else the prunable weights at the first step
    this hook sees: pass `init` (checkpoint 0's tensors) when resuming. Between logging steps
    it does nothing, so it adds no host sync to the loop; at a logging step it syncs once.
    `grad_norm_last_batch` reads the gradients the last train step left in `.grad` (SGD's
    weight decay is added to a copy, so they are the loss gradient alone).
    """

    def __init__(self, log, steps: Collection[int], init: StateDict | None = None, per_layer: bool = False):
        self.log, self.steps, self.per_layer = log, frozenset(steps), per_layer
        self.init = init
        self._copied = False

    def at(self, step: int, state: TrainState) -> None:
        if not self._copied:  # a private copy on the model's device, so no logging step moves it
            params = models.prunable(state.model)
            ref = params if self.init is None else self.init
            self.init = {k: ref[k].detach().to(p.device, copy=True) for k, p in params.items()}
            self._copied = True
        if step not in self.steps:
            return
        stats = weight_stats(state.model.state_dict(), init=self.init)
        params = dict(state.model.named_parameters())
        grads = {k: params[k].grad for k in self.init if params[k].grad is not None}
        if grads and len(grads) == len(self.init):
            stats |= grad_norm_of(grads, "grad_norm_last_batch")
        if not self.per_layer:
            stats = {k: v for k, v in stats.items() if not k.startswith("layer/")}
        self.log.log("early", step, to_floats(whole_first(stats)), epoch=state.plan.epoch(step))

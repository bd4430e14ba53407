"""Train one stage of an archive from `start` to the plan's end, resuming from its last checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from rewind.archive.metrics import MetricsLog
from rewind.archive.stage import Stage
from rewind.train import hooks as H
from rewind.train import loop
from rewind.train.evaluate import evaluate
from rewind.train.loop import TrainState


@dataclass
class SegmentResult:
    final_test: dict[str, float]
    best_test_acc: float
    resumed_from: int | None


def restore(state: TrainState, stage: Stage, step: int) -> dict[str, torch.Tensor]:
    """Load weights, buffers, optimizer and RNG state of checkpoint `step`; returns its tensors."""
    ckpt = stage.load(step, with_state=True)
    model_keys = state.model.state_dict().keys()
    state.model.load_state_dict({k: v for k, v in ckpt.tensors.items() if k in model_keys})
    state.optimizer.load_state_dict(ckpt.state["optimizer"])
    torch.set_rng_state(ckpt.state["rng"]["torch"])
    if "cuda" in ckpt.state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt.state["rng"]["cuda"])
    return ckpt.tensors


def _analysis_hooks(state: TrainState, stage: Stage, start: int, resumed: int | None, metrics: MetricsLog) -> list:
    """Online early-phase statistics and Fisher trace, when the plan asks for them."""
    from rewind.analysis.early import EarlyStats
    from rewind.analysis.fisher import FisherLog

    hooks = []
    if state.plan.stats_steps:
        # The reference for `*_init` is the segment's start (iteration 0 of a trunk, k of a level).
        init = stage.load(start).tensors if resumed is not None and stage.has(start) else None
        hooks.append(EarlyStats(metrics, state.plan.stats_steps, init=init))
    if state.plan.fisher_steps:
        hooks.append(FisherLog(metrics, state.loader.originals(), state.plan.fisher_examples))
    return hooks


def run_segment(state: TrainState, stage: Stage, start: int, test: tuple[torch.Tensor, torch.Tensor],
                progress: str = "auto", label: str = "train",
                extra_tensors: Callable[[], dict[str, torch.Tensor]] = dict,
                on_restore: Callable[[dict[str, torch.Tensor]], None] | None = None,
                start_scalars: tuple[str, dict[str, float]] | None = None) -> SegmentResult:
    """Train `state` from iteration `start` (the model already holds the weights at `start`).

    `start_scalars` = (split, values) are logged once at `start` (e.g. a level's sparsity).
    """
    end = state.plan.total
    held = [s for s in stage.steps() if start < s <= end and stage.has(s, with_state=True)]
    resumed = max(held) if held else None
    if resumed is not None:
        tensors = restore(state, stage, resumed)
        if on_restore is not None:
            on_restore(tensors)
    metrics = MetricsLog(stage.dir, resume_step=resumed)
    if start_scalars is not None and resumed is None:
        metrics.log(start_scalars[0], start, start_scalars[1], epoch=state.plan.epoch(start))
    train_log = H.TrainLog(metrics)
    evaluation = H.Eval(metrics, test[0], test[1], state.plan.eval_steps)
    hooks = [train_log, evaluation, *_analysis_hooks(state, stage, start, resumed, metrics),
             H.Checkpoint(stage, metrics, extra_tensors),
             H.Progress(progress, label, resumed if resumed is not None else start, end, train_log, evaluation)]
    try:
        loop.run(state, resumed if resumed is not None else start, end, hooks, at_start=resumed is None)
    finally:
        for h in hooks:
            h.close()
        metrics.close()
    tests = [r for r in metrics.rows if r["split"] == "test"]
    final = next((r for r in reversed(tests) if int(r["step"]) == end), None)
    if final:
        final_test = {"loss": float(final["loss"]), "acc": float(final["acc"])}
    elif state.plan.eval_steps:
        final_test = evaluate(state.model, test[0], test[1], state.loader.normalize)
    else:  # a plan without evaluation (rotation pre-training predicts rotations, not classes)
        final_test = {"loss": float("nan"), "acc": float("nan")}
    best = max([float(r["acc"]) for r in tests] + [final_test["acc"]])
    return SegmentResult(final_test, best, resumed)

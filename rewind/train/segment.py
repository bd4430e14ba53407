"""Train one stage of an archive from `start` to the plan's end, resuming from its last checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rewind.archive.metrics import MetricsLog
from rewind.archive.stage import Checkpoint, Stage
from rewind.train import hooks as H
from rewind.train import loop
from rewind.train.evaluate import evaluate
from rewind.train.loop import Hook, TrainState


@dataclass
class SegmentResult:
    final_test: dict[str, float]
    best_test_acc: float
    resumed_from: int | None
    end: int = 0  # the last step trained: the plan's end, or where stopping by fit ended it
    test_accs: list[float] = field(default_factory=list)  # every evaluation's test accuracy, in step order
    reached_fit: bool | None = None  # with stopping by fit: whether the training accuracy reached it


def restore(state: TrainState, stage: Stage, step: int) -> Checkpoint:
    """Load weights, buffers, optimizer and RNG state of checkpoint `step`; returns the checkpoint."""
    ckpt = stage.load(step, with_state=True)
    ckpt.into(state.model)
    ckpt.optimizer_into(state.optimizer)
    torch.set_rng_state(ckpt.state["rng"]["torch"])
    if "cuda" in ckpt.state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt.state["rng"]["cuda"])
    return ckpt


@dataclass
class Segment:
    """One stage to train from `start` to its plan's end, and once opened, the hooks that write it.

    Shared by the one-model loop (`train_segment`) and the stacked one (`replicas.run_segments`),
    so both resume and write archives the same way.
    """

    state: TrainState
    stage: Stage
    start: int  # the model already holds the weights at `start`
    test: tuple[torch.Tensor, torch.Tensor]
    progress: str = "auto"
    label: str = "train"
    start_scalars: tuple[str, dict[str, float]] | None = None  # (split, values) logged once at `start`
    extra_hooks: list[Hook] = field(default_factory=list)  # run after evaluation, before the checkpoint
    resumed: int | None = field(default=None, init=False)
    hooks: list[Hook] = field(default_factory=list, init=False)
    metrics: MetricsLog | None = field(default=None, init=False)

    @property
    def end(self) -> int:
        return self.state.plan.total

    @property
    def first(self) -> int:
        """The first iteration still to train."""
        return self.resumed if self.resumed is not None else self.start

    def resumable(self) -> set[int]:
        """Steps after `start` whose weights and optimizer state this stage holds."""
        return {s for s in self.stage.steps() if self.start < s <= self.end and self.stage.has(s, with_state=True)}

    def open(self, resume_from: int | None) -> list[Hook]:
        """Restore checkpoint `resume_from` (None: start fresh) and make the hooks; close() afterwards."""
        plan = self.state.plan
        # The start is always saved: it is the reference of the `*_init` statistics after a resume.
        self.state.plan = dataclasses.replace(plan, save_steps=plan.save_steps | {self.start})
        sums = fit_sums = ckpt = None
        if resume_from is not None:
            ckpt = restore(self.state, self.stage, resume_from)
            sums, fit_sums = ckpt.state.get("train_log"), ckpt.state.get("fit")
        self.resumed = resume_from
        # A complete stage is only read back: no new TensorBoard file, no rewrite of metrics.csv.
        self.metrics = self.stage.metrics_log(ckpt, tensorboard=resume_from != self.end)
        if resume_from != self.end:
            self.stage.forget_metrics()
        if resume_from is None:
            self.metrics.hparams(self.stage.manifest.data.get("config", {}))
        if self.start_scalars is not None and resume_from is None:
            self.metrics.log(self.start_scalars[0], self.start, self.start_scalars[1],
                             epoch=self.state.plan.epoch(self.start))
        train_log = H.TrainLog(self.metrics)
        if sums is not None:
            train_log.load(sums)
        fit = H.StopAtFit(self.metrics, self.state) if self.state.plan.until_train_acc else None
        if fit is not None and fit_sums is not None:
            fit.load(fit_sums)
        evaluation = H.Eval(self.metrics, self.test[0], self.test[1], self.state.plan.eval_steps)
        # The analysis hooks read the last step's gradients before evaluation runs the model again
        # (with CUDA graphs, a new replay may overwrite them). Stopping by fit moves the end before
        # the checkpoint hook saves it.
        self.hooks = [train_log, *([fit] if fit else []), *self._analysis_hooks(), evaluation, *self.extra_hooks,
                      H.Checkpoint(self.stage, self.metrics, train_log, fit),
                      H.Progress(self.progress, self.label, self.first, self.end, train_log, evaluation)]
        return self.hooks

    def _analysis_hooks(self) -> list[Hook]:
        """Online early-phase statistics and Fisher trace, when the plan asks for them."""
        from rewind.train.early import EarlyStats
        from rewind.train.fisher import FisherLog

        plan, hooks = self.state.plan, []
        if plan.stats_steps:
            # The reference for `*_init` is the segment's start (iteration 0 of a trunk, k of a level).
            resumed = self.resumed is not None and self.stage.has(self.start)
            hooks.append(EarlyStats(self.metrics, plan.stats_steps,
                                    init=self.stage.load(self.start).tensors if resumed else None))
        if plan.fisher_steps:
            hooks.append(FisherLog(self.metrics, self.state.loader.originals(), plan.fisher_examples))
        return hooks

    def close(self) -> None:
        for h in self.hooks:
            h.close()
        if self.metrics is not None:
            self.metrics.close()

    def result(self) -> SegmentResult:
        tests = [r for r in self.metrics.rows if r["split"] == "test"]
        final = next((r for r in reversed(tests) if int(r["step"]) == self.end), None)
        if final:
            final_test = {"loss": float(final["loss"]), "acc": float(final["acc"])}
        elif self.state.plan.eval_steps:
            final_test = evaluate(self.state.model, self.test[0], self.test[1], self.state.loader.normalize)
        else:  # a plan without evaluation (rotation pre-training predicts rotations, not classes)
            final_test = {"loss": float("nan"), "acc": float("nan")}
        best = max([float(r["acc"]) for r in tests] + [final_test["acc"]])
        accs = [float(r["acc"]) for r in sorted(tests, key=lambda r: int(r["step"]))]
        plan = self.state.plan
        reached = H.stop_step(self.metrics.rows, plan.until_train_acc) is not None if plan.until_train_acc else None
        return SegmentResult(final_test, best, self.resumed, self.end, accs, reached)


def train_segment(segment: Segment) -> SegmentResult:
    """Train one segment alone (the N-model counterpart is `replicas.run_segments`)."""
    state, held = segment.state, segment.resumable()
    try:
        hooks = segment.open(max(held) if held else None)
        loop.run(state, segment.first, segment.end, hooks, at_start=segment.resumed is None)
    finally:
        segment.close()
    return segment.result()

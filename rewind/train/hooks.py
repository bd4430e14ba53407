"""Hooks for the loop: training logs, test evaluation, checkpoints, progress."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch

from rewind.archive.metrics import MetricsLog
from rewind.archive.stage import Stage
from rewind.steps import format as format_step
from rewind.train.evaluate import evaluate_state
from rewind.train.loop import Hook, TrainState


class TrainLog(Hook):
    """Mean training loss and accuracy since the last log step; sums stay on the device until then."""

    def __init__(self, metrics: MetricsLog):
        self.metrics = metrics
        self.last: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._loss, self._correct, self._count = 0.0, 0, 0

    def state(self) -> dict[str, float]:
        """The partial sums since the last log step: saved with a checkpoint so a resume logs the same rows."""
        return {"loss": float(self._loss), "correct": float(self._correct), "count": self._count}

    def load(self, state: dict[str, float]) -> None:
        self._loss, self._correct, self._count = state["loss"], state["correct"], int(state["count"])

    def after_step(self, iteration, loss, correct, count) -> None:
        self._loss = self._loss + loss * count
        self._correct = self._correct + correct
        self._count += count

    def at(self, step: int, state: TrainState) -> None:
        if step not in state.plan.log_steps or not self._count:
            return
        self.last = {"loss": float(self._loss) / self._count, "acc": float(self._correct) / self._count,
                     "lr": state.plan.lr_at(step - 1)}
        self.metrics.log("train", step, self.last, epoch=state.plan.epoch(step))
        self._reset()


class Eval(Hook):
    def __init__(self, metrics: MetricsLog, images: torch.Tensor, labels: torch.Tensor, steps: frozenset[int]):
        self.metrics, self.images, self.labels, self.steps = metrics, images, labels, steps
        self.last: dict[str, Any] = {}

    def at(self, step: int, state: TrainState) -> None:
        # The plan's own steps too: stopping by fit adds the step where it stopped.
        if step in self.steps or step in state.plan.eval_steps:
            result = evaluate_state(state, self.images, self.labels)
            self.metrics.log("test", step, result, epoch=state.plan.epoch(step))
            self.last = {"step": step, **result}


class StopAtFit(Hook):
    """Stopping by fit (Ash & Adams's code): at the end of every pass over the run's training data
    (every `plan.iterations_per_epoch` steps, an epoch of the run's own data), the training accuracy
    over that pass's batches is logged (split `fit`); at the first at or above `plan.until_train_acc`
    the run ends there: the plan's end moves to that step, which is evaluated and saved.

    The window's sums travel with checkpoints (`state`, `load`), and a resumed run that had stopped
    reads its stop from the `fit` rows kept in metrics.csv, so a resume ends where the first run did.
    """

    def __init__(self, metrics: MetricsLog, state: TrainState):
        self.metrics, self.threshold = metrics, state.plan.until_train_acc
        self._correct, self._count = 0, 0
        stopped = stop_step(metrics.rows, self.threshold)
        if stopped is not None:
            self._end(state, stopped)

    def state(self) -> dict[str, float]:
        return {"correct": float(self._correct), "count": self._count}

    def load(self, state: dict[str, float]) -> None:
        self._correct, self._count = state["correct"], int(state["count"])

    def after_step(self, iteration, loss, correct, count) -> None:
        self._correct = self._correct + correct
        self._count += count

    def at(self, step: int, state: TrainState) -> None:
        if step % state.plan.iterations_per_epoch or not self._count:
            return
        acc = float(self._correct) / self._count
        self.metrics.log("fit", step, {"acc": acc}, epoch=state.plan.epoch(step))
        self._correct, self._count = 0, 0
        if acc >= self.threshold:
            self._end(state, step)

    @staticmethod
    def _end(state: TrainState, step: int) -> None:
        plan = state.plan
        state.plan = dataclasses.replace(plan, total=step, save_steps=plan.save_steps | {step},
                                         eval_steps=frozenset(s for s in plan.eval_steps if s <= step) | {step})
        state.stop = True


def stop_step(rows: list[dict[str, Any]], threshold: float) -> int | None:
    """The first step whose `fit` row (training accuracy over the pass that ended there) is at or above
    `threshold`, or None (threshold 0: stopping by fit is off)."""
    if not threshold:
        return None
    hits = [int(r["step"]) for r in rows if r["split"] == "fit" and float(r["acc"]) >= threshold]
    return min(hits) if hits else None


class Checkpoint(Hook):
    """Saves weights and buffers plus optimizer, RNG and train-log state.

    Metrics are flushed first, so a checkpoint at step S implies metrics.csv holds every row up to S.
    """

    def __init__(self, stage: Stage, metrics: MetricsLog, train_log: TrainLog, fit: StopAtFit | None = None):
        self.stage, self.metrics, self.train_log, self.fit = stage, metrics, train_log, fit

    def at(self, step: int, state: TrainState) -> None:
        if step in state.plan.save_steps and not self.stage.has(step, with_state=True):
            self.metrics.flush()
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            self.stage.save(step, state.model.state_dict(),
                            {"epoch": state.plan.epoch(step), "metrics_rows": self.metrics.rows_through(step)},
                            {"optimizer": state.optimizer.state_dict(), "rng": rng,
                             "train_log": self.train_log.state(),
                             **({"fit": self.fit.state()} if self.fit is not None else {})})


class Progress(Hook):
    """A tqdm bar on a terminal, plain lines at log steps otherwise."""

    def __init__(self, mode: str, label: str, start: int, end: int, train_log: TrainLog, evaluation: Eval):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.label, self.end = mode, label, end
        self.train_log, self.evaluation = train_log, evaluation
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=end, initial=start, desc=label, unit="it", dynamic_ncols=True, leave=True)

    def after_step(self, iteration, loss, correct, count) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def _summary(self) -> dict[str, str]:
        out = {}
        if self.train_log.last:
            out["loss"] = f"{self.train_log.last['loss']:.3f}"
            out["acc"] = f"{100 * self.train_log.last['acc']:.1f}%"
        if self.evaluation.last:
            out["test"] = f"{100 * self.evaluation.last['acc']:.1f}%"
        return out

    def at(self, step: int, state: TrainState) -> None:
        if step not in state.plan.log_steps and step not in self.evaluation.steps:
            return
        if self.bar is not None:
            self.bar.set_postfix(self._summary(), refresh=False)
        elif self.mode == "lines":
            fields = " ".join(f"{k} {v}" for k, v in self._summary().items())
            where = format_step(step, state.plan.iterations_per_epoch)
            print(f"{self.label} {step}/{self.end} ({where}) {fields}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

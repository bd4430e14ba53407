"""A training plan resolved to iterations: length, learning rate at t, and when to eval, log and save.

A run may start inside its schedule: after a pre-training of P iterations the main run takes the
schedule's place from step P on (OpenLTH's `train_start_step`). Its own iterations still count
from 0 (checkpoints, metrics, rewind points), and `offset` = P says where iteration 0 sits on the
schedule: learning rate, data order and augmentation are those of schedule step `offset + t`,
and the run ends where the schedule ends, after `total` = T - P iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewind import steps
from rewind.config import TrainConfig
from rewind.errors import UserError

# Dense early, as the early-phase studies need (DESIGN.md); then every `save_every`, and the end.
DENSE_CHECKPOINTS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000)


@dataclass(frozen=True)
class Plan:
    iterations_per_epoch: int
    total: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    epoch_decay: float
    warmup: int
    weight_decay: float
    eval_steps: frozenset[int]
    log_steps: frozenset[int]
    save_steps: frozenset[int]
    stats_steps: frozenset[int] = frozenset()
    fisher_steps: frozenset[int] = frozenset()
    fisher_examples: int = 256
    offset: int = 0  # schedule steps before this run's iteration 0 (a pre-training's length), see above
    until_train_acc: float = 0.0  # stop at the first eval step at or above this training accuracy (0: never)

    @classmethod
    def from_config(cls, t: TrainConfig, train_examples: int, extra_saves: tuple[int, ...] = (),
                    offset: int = 0) -> "Plan":
        """The plan of `t` for a run that starts `offset` steps into its schedule (0: at its start)."""
        ipe = steps.iterations_per_epoch(train_examples, t.batch_size)
        total = steps.parse(t.steps, ipe, "steps") - offset
        if offset and total <= 0:
            raise UserError(f"the pre-training ({offset} iterations) takes the whole schedule (--steps {t.steps}, "
                            f"{total + offset} iterations): the main run starts where it ends. Shorten "
                            "--pretrain-steps, lengthen --steps, or use --pretrain-schedule restart")

        def every(text: str, what: str) -> set[int]:
            k = steps.parse(text, ipe, what)
            return set(range(0, total + 1, k)) if k > 0 else set()

        until = steps.parse(t.stats_until, ipe, "stats_until")
        stats_every = every(t.stats_every, "stats_every")  # empty: statistics off
        stats = {s for s in set(DENSE_CHECKPOINTS) | stats_every if s <= until} if stats_every else set()
        saves = set(DENSE_CHECKPOINTS) | every(t.save_every, "save_every")
        saves |= set(steps.parse_list(t.save_at, ipe, "save_at")) | set(extra_saves) | {total}
        # a milestone named twice would multiply the learning rate by lr_gamma twice there
        milestones = tuple(sorted(steps.parse_list(t.lr_milestones, ipe, "lr_milestones", unique=True)))
        return cls(
            iterations_per_epoch=ipe,
            total=total,
            lr=t.lr,
            milestones=milestones,
            gamma=t.lr_gamma,
            epoch_decay=t.lr_epoch_decay,
            warmup=steps.parse(t.warmup, ipe, "warmup"),
            weight_decay=t.weight_decay,
            eval_steps=frozenset(s for s in every(t.eval_every, "eval_every") | {0, total} if s <= total),
            log_steps=frozenset(s for s in every(t.log_every, "log_every") | {total} if 0 < s <= total),
            save_steps=frozenset(s for s in saves if s <= total),
            stats_steps=frozenset(s for s in stats if s <= total),
            fisher_steps=frozenset(every(t.fisher_every, "fisher_every")),
            fisher_examples=t.fisher_examples,
            offset=offset,
            until_train_acc=t.until_train_acc,
        )

    def position(self, iteration: int) -> int:
        """The schedule step of this run's `iteration`: what its learning rate, data order and augmentation follow."""
        return self.offset + iteration

    def lr_at(self, iteration: int) -> float:
        """The learning rate of this run's `iteration` (milestones and warmup are schedule steps)."""
        s = self.position(iteration)
        lr = self.lr * self.gamma ** sum(s >= m for m in self.milestones)
        if self.epoch_decay != 1.0:
            lr *= self.epoch_decay ** (s // self.iterations_per_epoch)
        if s < self.warmup:
            lr *= (s + 1) / self.warmup
        return lr

    def epoch(self, iteration: int) -> float:
        """`iteration` in epochs, counted as the run's iterations are (from its own 0)."""
        return iteration / self.iterations_per_epoch

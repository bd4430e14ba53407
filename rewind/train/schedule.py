"""A training plan resolved to iterations: length, learning rate at t, and when to eval, log and save."""

from __future__ import annotations

from dataclasses import dataclass

from rewind import steps
from rewind.config import TrainConfig

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

    @classmethod
    def from_config(cls, t: TrainConfig, train_examples: int, extra_saves: tuple[int, ...] = ()) -> "Plan":
        ipe = steps.iterations_per_epoch(train_examples, t.batch_size)
        total = steps.parse(t.steps, ipe, "steps")

        def every(text: str, what: str) -> set[int]:
            k = steps.parse(text, ipe, what)
            return set(range(0, total + 1, k)) if k > 0 else set()

        until = steps.parse(t.stats_until, ipe, "stats_until")
        stats_every = every(t.stats_every, "stats_every")  # empty: statistics off
        stats = {s for s in set(DENSE_CHECKPOINTS) | stats_every if s <= until} if stats_every else set()
        saves = set(DENSE_CHECKPOINTS) | every(t.save_every, "save_every")
        saves |= set(steps.parse_list(t.save_at, ipe, "save_at")) | set(extra_saves) | {total}
        return cls(
            iterations_per_epoch=ipe,
            total=total,
            lr=t.lr,
            milestones=tuple(sorted(steps.parse_list(t.lr_milestones, ipe, "lr_milestones"))),
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
        )

    def lr_at(self, iteration: int) -> float:
        lr = self.lr * self.gamma ** sum(iteration >= m for m in self.milestones)
        if self.epoch_decay != 1.0:
            lr *= self.epoch_decay ** (iteration // self.iterations_per_epoch)
        if iteration < self.warmup:
            lr *= (iteration + 1) / self.warmup
        return lr

    def epoch(self, iteration: int) -> float:
        return iteration / self.iterations_per_epoch

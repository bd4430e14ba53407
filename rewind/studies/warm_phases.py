"""What each phase of a warm-start study trains (Ash & Adams 2020; Berariu et al. 2021): the first
phase on a seeded fraction of the data, the second on all of it, their optimizers (an SGD given
without a momentum trains with momentum 0 here), and the data schedules of the one-phase studies:
the smooth transition from the subset to the full set and the stages of growing data."""

from __future__ import annotations

from typing import Any

from rewind import config as cfg
from rewind.studies.plasticity_settings import numbers, optimizer_list
from rewind import steps
from rewind.data.phases import stage_parts
from rewind.errors import UserError
from rewind.train import trunk


# In warm-start studies an SGD given without a momentum trains with momentum 0, as torch's SGD does
# and as both papers' code uses it (Ash & Adams: `optim.SGD(params, lr, weight_decay)`; Berariu et
# al. compare "SGD" with "SGD with momentum 0.9"), not with the IMP recipe's 0.9
# (`config.optimizer_settings`). `--momentum`, or MOMENTUM in `--optimizers`, sets another.
WARM_SGD_MOMENTUM = 0.0


def sgd_momentum(config: cfg.Config) -> cfg.Config:
    """`config` with WARM_SGD_MOMENTUM where it trains with an SGD whose momentum was not given."""
    t = config.train
    return config.with_values(momentum=WARM_SGD_MOMENTUM) if t.optimizer == "sgd" and t.momentum is None else config


def first_phase(config: cfg.Config) -> cfg.Config:
    """The first phase: the config's training on the seeded subset (a fraction of the data: its epochs
    are passes over the subset, "350 epochs on half of data")."""
    w = config.warm
    return sgd_momentum(config.with_values(train_fraction=w.warm_fraction, fraction_seed=w.warm_seed))


def second_phase(config: cfg.Config, lr: float | None = None) -> cfg.Config:
    """The second phase: `second_steps` on all the data, with its optimizer and learning rate (from the
    first phase's weights: never a shrunk init of its own)."""
    w = config.warm
    kind = config.train.optimizer if w.second_optimizer == "same" else w.second_optimizer
    lrs = numbers(w.second_lr, "second_lr")
    second = config.with_values(steps=w.second_steps, init_shrink=1.0, init_perturb=0.0)
    return sgd_momentum(second.with_optimizer(kind, lr or (lrs[0] if lrs else None), second_optimizer="same",
                                              optimizers=""))


def optimizer_values(config: cfg.Config) -> list[dict[str, Any]]:
    """`--optimizers` as the values of one first phase each: kind, learning rate and (sgd, rmsprop)
    the momentum it trains with."""
    out = []
    for kind, lr, momentum in optimizer_list(config.warm.optimizers):
        if kind in cfg.OPTIMIZER_FIELDS["momentum"] and momentum is None:
            momentum = WARM_SGD_MOMENTUM if config.train.momentum is None else config.train.momentum
        value = {"optimizer": kind, "optimizer_lr": lr or config.train.lr, "optimizer_momentum": momentum}
        if value in out:
            spelled = f"{kind}:{value['optimizer_lr']:g}" + ("" if momentum is None else f":{momentum:g}")
            raise UserError(f"--optimizers lists {spelled} twice ({config.warm.optimizers!r}, at --lr "
                            f"{config.train.lr:g}): each entry is one first phase; give it once")
        out.append(value)
    return out


def transition(config: cfg.Config, gamma: float, total: int) -> str:
    """The smooth transition as a phase of the whole run (`total` iterations, the N of p = 1 -
    gamma^(50 n / N)), from the first phase's subset to the full set."""
    import numpy as np

    w = config.warm
    return (f"transition(gamma={np.format_float_positional(gamma, trim='-')},fraction={w.warm_fraction},"
            f"seed={w.warm_seed}):0it-{total}it")


def stage_ends(second: cfg.Config, n: int, ratio: float, length: str) -> list[int]:
    """Where each of n stages ends, in iterations: stage i trains `length` (`--steps`) counted in epochs
    of its own data D_i (parts 1..i of `phases.stage_parts`), so its length is proportional to |D_i|
    (Berariu et al. A.3: "a number of steps proportional with the number of examples"). Read from
    the labels of `second`'s data, the training set the stages are cut from."""
    data = trunk.load_data(second)
    parts = stage_parts(data.train_y, data.num_classes, n, ratio, second.warm.warm_seed)
    ends, end, size = [], 0, 0
    for part in parts[:n]:
        size += len(part)
        end += steps.parse(length, steps.iterations_per_epoch(size, second.train.batch_size), "steps")
        ends.append(end)
    return ends


def stages(config: cfg.Config, n: int, ratio: float, ends: list[int]) -> str:
    """n stages on growing data (`phases.stage_parts`) ending at `ends`, each with a fresh optimizer
    state unless it is carried; the run then trains on all the data."""
    w = config.warm
    reset = int(w.optimizer_state == "reset")
    return ",".join(f"stage(n={n},ratio={float(ratio)},index={i},reset={reset},seed={w.warm_seed}):"
                    f"{start}it-{end}it" for i, (start, end) in enumerate(zip([0, *ends], ends), start=1))

"""Pre-training before iteration 0 of the trunk: blur, random labels, rotation prediction, a subset.

It is a stage of the trunk's archive (`trunk/pretrain/`) with its own length, a constant learning
rate and its own data order; its final weights become the trunk's iteration 0. Rotation trains a
4-way head, which is replaced by a freshly initialised 10-way head before the main run.
"""

from __future__ import annotations

import dataclasses

import torch

from rewind import models, seeds
from rewind.archive.run import Run
from rewind.data.phases import Phase, PhaseSchedule
from rewind.train.loop import TrainState
from rewind.train.optim import autocast_dtype, compile_setting, make_optimizer
from rewind.train.schedule import Plan
from rewind.train.segment import Segment, train_segment


def phase(config) -> Phase:
    p = config.pretrain
    params = {"blur": {"size": p.pretrain_blur_size}, "subset": {"fraction": p.pretrain_subset}}.get(p.pretrain, {})
    return Phase(p.pretrain, 0, None, params, seed=p.pretrain_seed)


def pretrain(setup, run: Run) -> dict[str, torch.Tensor] | None:
    """The pre-trained weights (trained, resumed or read back), or None without pre-training."""
    config = setup.config
    p, t = config.pretrain, config.train
    if p.pretrain == "none":
        return None
    schedule = PhaseSchedule([phase(config)], setup.data.num_classes)
    train_cfg = dataclasses.replace(t, steps=p.pretrain_steps, lr=p.pretrain_lr, lr_milestones="", warmup="0it",
                                    lr_epoch_decay=1.0)
    plan = Plan.from_config(train_cfg, len(setup.data.train_y))
    if p.pretrain == "rotation":  # test labels are classes, the head predicts rotations
        plan = dataclasses.replace(plan, eval_steps=frozenset())
    model = setup.new_model(num_classes=schedule.num_outputs())
    # Its own data order and augmentation, so the main run's batches are those of a run without it.
    loader = setup.train_loader(seeds.derive(t.order_seed, "pretrain"), seeds.derive(t.aug_seed, "pretrain"))
    compile = compile_setting(config.runtime.compile, setup.device)
    kind = None if p.pretrain_optimizer == "same" else p.pretrain_optimizer
    state = TrainState(model, make_optimizer(model, t, kind), loader, plan, phases=schedule,
                       compile=compile, autocast=autocast_dtype(t))
    train_segment(Segment(state, run.stage("trunk/pretrain"), 0, setup.test, config.runtime.progress,
                          f"pretrain {p.pretrain}"))
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    if p.pretrain == "rotation":
        head = setup.new_model(seed=seeds.derive(t.model_seed, "fresh-head"))
        prefix = models.head(head) + "."
        weights.update({k: v for k, v in head.state_dict().items() if k.startswith(prefix)})
    return weights

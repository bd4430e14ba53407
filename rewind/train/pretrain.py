"""Pre-training before iteration 0 of the trunk: blur, random labels, rotation prediction, a subset.

It is a stage of the trunk's archive (`trunk/pretrain/`) with its own length, a constant learning
rate and its own data order; its final weights become the trunk's iteration 0. Rotation trains a
4-way head, which is replaced by a freshly initialised 10-way head before the main run.

Its length `pretrain_steps` counts epochs of the pre-training data, as OpenLTH does (a subset's
epochs are shorter). With `pretrain_schedule` offset (the default, OpenLTH's `train_start_step`)
those P iterations take the place of the first P steps of the main schedule: the main run
continues the schedule from step P and ends where it ends, so rewinding to k is the special case
of pre-training on the task itself for k steps. With restart the main run trains the whole
schedule from the pre-trained weights.
"""

from __future__ import annotations

import dataclasses

import torch

from rewind import models, seeds
from rewind.archive.run import Run
from rewind.data.phases import Phase, PhaseSchedule, subset_size
from rewind.train.loop import TrainState
from rewind.train.optim import autocast_dtype, compile_setting, make_optimizer
from rewind.train.schedule import Plan
from rewind.train.segment import Segment, train_segment


def phase(config) -> Phase:
    p = config.pretrain
    params = {"blur": {"size": p.pretrain_blur_size}, "subset": {"fraction": p.pretrain_subset}}.get(p.pretrain, {})
    return Phase(p.pretrain, 0, None, params, seed=p.pretrain_seed)


def pretrain_plan(config, train_examples: int) -> Plan:
    """The pre-training's plan: `pretrain_steps` in epochs of the data it sees (a subset's, for subset)."""
    p, t = config.pretrain, config.train
    train_cfg = dataclasses.replace(t, steps=p.pretrain_steps, lr=p.pretrain_lr, lr_milestones="", warmup="0it",
                                    lr_epoch_decay=1.0, until_train_acc=0.0)  # its own length, never stopped by fit
    examples = subset_size(p.pretrain_subset, train_examples) if p.pretrain == "subset" else train_examples
    return Plan.from_config(train_cfg, examples)


def schedule_offset(config, train_examples: int) -> int:
    """Where the main run starts on its schedule: the pre-training's iteration count with
    `pretrain_schedule` offset, else 0."""
    if config.pretrain.pretrain == "none" or config.pretrain.pretrain_schedule == "restart":
        return 0
    return pretrain_plan(config, train_examples).total


def pretrain(setup, run: Run) -> dict[str, torch.Tensor] | None:
    """The pre-trained weights (trained, resumed or read back), or None without pre-training."""
    config = setup.config
    p, t = config.pretrain, config.train
    if p.pretrain == "none":
        return None
    schedule = PhaseSchedule([phase(config)], setup.data.num_classes)
    plan = pretrain_plan(config, len(setup.data.train_y))
    if p.pretrain == "rotation":  # test labels are classes, the head predicts rotations
        plan = dataclasses.replace(plan, eval_steps=frozenset())
    model = setup.new_model(num_classes=schedule.num_outputs())
    # Its own data order and augmentation, so the main run draws the batches a run without it draws at
    # the same schedule steps.
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

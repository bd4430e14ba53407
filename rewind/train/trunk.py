"""`rewind train`: one dense run (the trunk) into an archive that later analyses reuse."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rewind import data as D
from rewind import models, seeds
from rewind.archive.run import Run, open_run
from rewind.config import Config
from rewind.data.sources import train_size
from rewind.errors import UserError
from rewind.prune.masks import Masks, to_device
from rewind.train.loop import TrainState
from rewind.train.optim import autocast_dtype, compile_setting, make_optimizer
from rewind.train.pretrain import pretrain, pretrain_plan, schedule_offset
from rewind.train.schedule import Plan
from rewind.train.replicas import train_segments
from rewind.train.segment import Segment
from rewind.train.device import resolve_device
from rewind.train.warmstart import shrink_perturb


def load_data(config: Config) -> D.Dataset:
    d = config.data
    return D.load(d.source, config.runtime.data_dir, d.train_examples, d.test_examples, d.subset_seed, d.holdout,
                  d.train_fraction, d.fraction_seed, d.normalize)


def train_count(config: Config) -> int:
    """How many training examples a run of `config` sees (what its epochs count), known without
    loading or downloading anything."""
    d = config.data
    return train_size(d.source, d.train_examples, d.holdout, d.train_fraction)


@dataclass
class Setup:
    """What every training in an archive shares: device, data on it, and the resolved plan.

    The plan starts where the pre-training (if any) leaves the schedule (`pretrain.schedule_offset`),
    so the trunk and every branch of it (IMP levels, stability children, continuations) follow it.
    """

    config: Config
    device: torch.device
    data: D.Dataset
    plan: Plan
    test: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def create(cls, config: Config, extra_saves: tuple[int, ...] = ()) -> "Setup":
        device = resolve_device(config.runtime.device)
        data = load_data(config)
        offset = schedule_offset(config, len(data.train_y))
        plan = Plan.from_config(config.train, len(data.train_y), extra_saves, offset)
        return cls(config, device, data, plan, (D.device_copy(data.test_x, device), D.device_copy(data.test_y, device)))

    def new_model(self, seed: int | None = None, num_classes: int | None = None) -> torch.nn.Module:
        """A fresh model for this data on the device: the run's init (`model_seed`, shrunk and perturbed
        when `init_shrink`, `init_perturb` say so) unless `seed` is given, with the dataset's classes
        unless `num_classes` is (a pre-training head)."""
        m = self.config.model

        def build(seed: int) -> torch.nn.Module:
            return models.build(m.model, m.width or 0, num_classes or self.data.num_classes, seed, blocks=m.blocks,
                                in_channels=self.data.in_channels, image_size=self.data.image_size)

        model = build(self.config.train.model_seed if seed is None else seed)
        if seed is None and (m.init_shrink, m.init_perturb) != (1.0, 0.0):
            other = build(seeds.derive(self.config.train.model_seed, "init-perturb"))
            shrink_perturb(model, other, m.init_shrink, m.init_perturb)
        return model.to(self.device, memory_format=torch.channels_last)

    def train_loader(self, order_seed: int | None = None, aug_seed: int | None = None) -> D.DeviceLoader:
        """The training data as the config feeds it (batch size, seeds unless others are given, and
        with `augment` the dataset's default augmentation), normalised as the dataset is."""
        t = self.config.train
        return D.DeviceLoader.from_dataset(self.data, t.batch_size, t.order_seed if order_seed is None else order_seed,
                                           t.aug_seed if aug_seed is None else aug_seed, self.config.data.augment,
                                           self.device)

    def state(self, model: torch.nn.Module, plan: Plan | None = None, masks: Masks | None = None) -> TrainState:
        """A training state; masks (if any) are applied to the weights at once."""
        t = self.config.train
        loader = self.train_loader()
        if masks is not None:
            masks = to_device(masks, self.device)
        compile = compile_setting(self.config.runtime.compile, self.device)
        return TrainState(model, make_optimizer(model, t), loader, plan or self.plan, masks=masks,
                          phases=self.deficits(t.deficit),
                          compile=compile,
                          autocast=autocast_dtype(t))

    def deficits(self, text: str):
        """The PhaseSchedule of deficit windows written as in `--deficit`, or None for none."""
        from rewind.data.phases import PhaseSchedule, parse_list

        phases = parse_list(text, self.plan.iterations_per_epoch)
        return PhaseSchedule(phases, self.data.num_classes) if phases else None


@dataclass
class TrunkResult:
    root: Path
    final_test: dict[str, float]
    best_test_acc: float
    resumed_from: int | None
    end: int = 0  # the trunk's last step: its length, or where stopping by fit (--until-train-acc) ended it
    reached_fit: bool | None = None


def train(config: Config, out: str | Path, extra_saves: tuple[int, ...] = ()) -> TrunkResult:
    """Train (or resume, or find complete) the trunk of the archive at `out`."""
    return train_replicas([config], [out], extra_saves)[0]


def train_replicas(configs: Sequence[Config], outs: Sequence[str | Path],
                   extra_saves: tuple[int, ...] = ()) -> list[TrunkResult]:
    """`train` for N configs at once, as one stacked model when N > 1; each archive is the one `train` writes.

    The configs may differ in seeds, learning rate schedule and weight decay, not in model, batch
    size or length.
    """
    if len(configs) != len(outs):
        raise UserError(f"{len(configs)} configs for {len(outs)} output folders")
    setups = [Setup.create(c, extra_saves) for c in configs]
    with ExitStack() as stack:
        runs = [stack.enter_context(open_run(out, "trunk", s.config.to_dict(), s.config.experiment_dict(),
                                             **_manifest_fields(s)))
                for s, out in zip(setups, outs)]
        labels = ["trunk"] if len(setups) == 1 else [f"trunk {k}" for k in range(len(setups))]
        segments = [Segment(s.state(initial_model(s, run)), run.stage("trunk"), 0, s.test, s.config.runtime.progress,
                            label) for s, run, label in zip(setups, runs, labels)]
        results = train_segments(segments, parallel=len(segments))
        for run, r in zip(runs, results):
            run.complete(final_test=r.final_test, best_test_acc=r.best_test_acc,
                         **({"final_step": r.end} if r.end != run.manifest.data["total_iterations"] else {}))
    return [TrunkResult(Path(out), r.final_test, r.best_test_acc, r.resumed_from, r.end, r.reached_fit)
            for out, r in zip(outs, results)]


def _manifest_fields(setup: Setup) -> dict[str, Any]:
    """What a trunk's manifest records besides its config: its resolved lengths, device and seeds
    (with a pre-training, its length in iterations: `pretrain_iterations`)."""
    t = setup.config.train
    fields = dict(iterations_per_epoch=setup.plan.iterations_per_epoch, total_iterations=setup.plan.total,
                  schedule_offset=setup.plan.offset, device=str(setup.device),
                  seeds={"model": t.model_seed, "order": t.order_seed, "aug": t.aug_seed})
    if setup.config.pretrain.pretrain != "none":
        fields["pretrain_iterations"] = pretrain_plan(setup.config, len(setup.data.train_y)).total
    return fields


def initial_model(setup: Setup, run: Run) -> torch.nn.Module:
    """The trunk's iteration 0: a fresh init, or the pre-trained weights (pre-training them first if needed)."""
    model = setup.new_model()
    pretrained = pretrain(setup, run)
    if pretrained is not None:
        model.load_state_dict(pretrained)
    return model

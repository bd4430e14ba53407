"""The warm-start papers' definitions at small scale (issue 19): first-phase epochs of the subset,
stage lengths per stage data, optimizers with their momenta, the authors' holdout split and input
normalisation, shrink-perturb before the first phase."""

import pytest
import torch

from conftest import tiny_config
from rewind import config as cfg
from rewind import data as D
from rewind import models, seeds
from rewind.data.phases import parse_list, stage_parts
from rewind.data.sources import train_size
from rewind.errors import UserError
from rewind.studies import plasticity as P
from rewind.train.trunk import Setup

pytestmark = pytest.mark.usefixtures("one_thread")
# 256 examples in batches of 32: 8 iterations a pass over all of them, 4 over the first phase's half.
SMALL = dict(train_examples=256, test_examples=64, width=4, steps="8it", second_steps="6it", stats_every="0it")


def small(cache, **values):
    return tiny_config(data_dir=cache, **{**SMALL, **values})


def test_first_phase_epochs_are_passes_over_its_half(cache):
    """Berariu et al.: "350 epochs on half of data" are 350 passes over the half, not 700."""
    p = P.specs(small(cache, study="length", steps="3ep", first_steps="0,1,3ep"))
    [setting] = p.settings
    assert Setup.create(setting.first).plan.iterations_per_epoch == 4  # 128 examples at 32
    assert Setup.create(setting.first).plan.total == 12 and len(Setup.create(setting.first).data.train_y) == 128
    warm = [a for a in p.arms if a.arm == "warm"]
    assert [a.values["first_steps"] for a in warm] == [0, 4, 12]
    assert [a.values["first_epochs"] for a in warm] == [0.0, 1.0, 3.0]
    # The second phase's epochs are passes over all the data; the first phase's subset is nested in it.
    second = Setup.create(warm[0].second)
    assert second.plan.iterations_per_epoch == 8 and len(second.data.train_y) == 256
    assert set(Setup.create(setting.first).data.train_y.tolist()) <= set(second.data.train_y.tolist())


def test_stage_lengths_are_epochs_of_each_stage_s_own_data(cache):
    """Berariu et al. A.3: stage i trains a number of steps proportional to its examples, E epochs of D_i."""
    config = small(cache, study="stages", stages="2", stage_ratio="0", steps="2ep", second_steps="1ep")
    [arm, scratch] = P.specs(config).arms
    labels = Setup.create(arm.second).data.train_y
    parts = stage_parts(labels, 10, 2, 0.0, 0)
    sizes = [len(parts[0]), len(parts[0]) + len(parts[1])]
    lengths = [2 * -(-n // 32) for n in sizes]  # 2 epochs of D_1, then of D_2 = D_1 + part 2
    assert sizes[0] < sizes[1] < 256 and lengths[0] < lengths[1]
    windows = [(ph.start, ph.end) for ph in parse_list(arm.second.train.deficit, 8)]
    assert windows == [(0, lengths[0]), (lengths[0], lengths[0] + lengths[1])]
    assert arm.second.train.steps == f"{sum(lengths) + 8}it" and scratch.second.train.steps == "1ep"


def test_optimizers_take_a_momentum_and_warm_sgd_defaults_to_none(cache):
    """Berariu et al. Figs. 8-10: plain SGD, SGD with momentum 0.9 and RMSprop in one command; an SGD
    given without momentum trains with momentum 0 in warm-start studies, as both papers' code."""
    p = P.specs(small(cache, study="length", first_steps="0,4it", optimizers="sgd:0.1:0,sgd:0.1:0.9,rmsprop:0.001"))
    assert [s.folder for s in p.settings] == ["sgd0.1-m0", "sgd0.1-m0.9", "rmsprop0.001-m0"]
    trained = [cfg.optimizer_settings(s.first.train)["momentum"] for s in p.settings]
    assert trained == [0.0, 0.9, 0.0] and [s.first.train.lr for s in p.settings] == [0.1, 0.1, 0.001]
    for s in p.settings:  # each second phase trains with its first phase's optimizer, momentum included
        arms = [a for a in p.arms if a.setting == s.folder]
        assert {cfg.optimizer_settings(a.second.train)["momentum"] for a in arms} == {
            cfg.optimizer_settings(s.first.train)["momentum"]}
    plain = P.specs(small(cache))  # --optimizer sgd, no --momentum
    assert cfg.optimizer_settings(plain.settings[0].first.train)["momentum"] == P.WARM_SGD_MOMENTUM == 0.0
    assert {cfg.optimizer_settings(a.second.train)["momentum"] for a in plain.arms} == {0.0}
    given = P.specs(small(cache, momentum=0.9))
    assert cfg.optimizer_settings(given.settings[0].first.train)["momentum"] == 0.9
    for bad, message in [("adam:0.001:0.9", "adam takes no momentum"), ("sgd:0.1:1.5", "momentum must be in"),
                         ("sgd:0.1:0:1", "is not KIND"), ("sgd:0.1,sgd:0.1:0", "lists sgd:0.1:0 twice")]:
        with pytest.raises(UserError, match=message):
            P.specs(small(cache, optimizers=bad))


def test_the_authors_holdout_split_and_sizes(cache):
    """Ash & Adams's code fits on a random 2/3 of the training set and scores the other third."""
    assert train_size("cifar10", holdout="1/3") == 33_333 and train_size("cifar10") == 50_000
    assert train_size("cifar10", holdout="1/3", fraction=0.5) == 16_666  # their first phase
    full = D.load("synthetic", cache, train_examples=300, test_examples=50)
    held = D.load("synthetic", cache, train_examples=300, test_examples=50, holdout="1/3")
    assert len(held.train_y) == 200 == train_size("synthetic", 300, "1/3") and len(held.test_y) == 50

    def rows(x):
        return {bytes(r.flatten().tolist()) for r in x}

    fit, scored, everything = rows(held.train_x), rows(D.load("synthetic", cache, 300, 0, 0, "1/3").test_x), \
        rows(full.train_x)
    assert not fit & scored and fit | scored == everything  # a split of the training set
    assert not fit & rows(full.test_x)  # the official test set is not used
    assert torch.equal(D.load("synthetic", cache, 300, 50, 0, "1/3").train_x, held.train_x)  # seeded
    with pytest.raises(UserError, match="holdout must be a fraction in"):
        cfg.load(None, {"holdout": "3/2"})


def test_half_normalisation_maps_pixels_to_minus_one_one(cache):
    """Ash & Adams's code: transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))."""
    config = small(cache, normalize="half")
    setup = Setup.create(config)
    assert (setup.data.mean, setup.data.std) == ((0.5,) * 3, (0.5,) * 3)
    x = setup.train_loader().normalize(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1).expand(1, 3, 2, 1))
    assert x.flatten().tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
    assert Setup.create(small(cache)).data.mean == D.SPECS["cifar10"].mean  # the dataset's own by default
    assert config.hash() != small(cache).hash()


def test_shrink_perturb_before_the_first_phase_is_an_option(cache):
    """Ash & Adams's code shrinks and perturbs at every round: the shrink-perturb arm's first phase starts
    from lam * theta0 + sigma * theta0'; the paper (the default) only between phases."""
    config = small(cache, shrink="0.5", perturb_sigma="0.25")
    plain = P.specs(config)
    assert [s.folder for s in plain.settings] == [""] and {a.setting for a in plain.arms} == {""}
    p = P.specs(config.with_values(shrink_first=True))
    assert [s.folder for s in p.settings] == ["", "shrunk-first-0.5-0.25"]
    assert {a.arm: a.setting for a in p.arms} == {"warm": "", "shrink-perturb": "shrunk-first-0.5-0.25",
                                                  "reset": "", "scratch": ""}
    first = p.settings[1].first
    init = Setup.create(first).new_model().state_dict()
    theta0 = Setup.create(p.settings[0].first).new_model().state_dict()
    other = Setup.create(p.settings[0].first).new_model(seed=seeds.derive(0, "init-perturb")).state_dict()
    for k in dict(models.build("resnet8", 4).named_parameters()):
        assert torch.equal(init[k], 0.5 * theta0[k] + 0.25 * other[k]), k
    assert first.hash() != p.settings[0].first.hash()  # a first phase of its own
    arm = next(a for a in p.arms if a.arm == "shrink-perturb")
    assert arm.second.model.init_shrink == 1.0 and arm.second.model.init_perturb == 0.0
    with pytest.raises(UserError, match="--study length has none|is not used by --study length"):
        P.specs(config.with_values(shrink_first=True, study="length", first_steps="4it"))

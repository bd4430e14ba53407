"""Warm starting (`rewind warm-start`): the arms share one first phase, and stacked with --parallel
they train what they train alone."""

import json

import pytest
import torch

from conftest import BN_BUFFERS, load, stacked_sizes, tiny_config
from rewind import models
from rewind.archive import run as runs
from rewind.train.trunk import Setup


def test_warm_start_arms_share_the_first_phase(tmp_path, cache):
    from rewind.studies import plasticity as warm

    config = tiny_config(data_dir=cache, steps="30it", second_steps="30it", eval_every="30it")
    table = warm.run(config, tmp_path / "ws")
    assert table.arm.tolist() == ["warm", "shrink-perturb", "reset", "scratch"]
    assert table.set_index("arm").loc["scratch", "gap_to_scratch"] == 0.0
    assert set(table.bn_stats) == {"fresh"}
    first = load(tmp_path / "ws", "trunk", 30)
    start = {arm: runs.read(p).stage("second").load(0).tensors
             for arm in ("warm", "shrink-perturb", "reset", "scratch")
             for p in (tmp_path / "ws" / "branches").glob(f"warm-{arm}-*")}
    # The trunk's parameters, with a fresh network's BatchNorm statistics (Ash & Adams's code).
    fresh = models.build("resnet8", 8, 10, 0).state_dict()
    for k, v in first.items():
        assert torch.equal(start["warm"][k], fresh[k] if k.endswith(BN_BUFFERS) else v), k
    # `trained` keeps the trunk's statistics: the warm arm starts as the trunk ended.
    setup = Setup.create(config.with_values(steps="30it"))
    kept = warm.start_from(setup, "warm", first, config.with_values(warm_bn_stats="trained")).state_dict()
    assert all(torch.equal(kept[k].cpu(), v) for k, v in first.items())
    assert not torch.equal(start["scratch"]["conv.weight"], first["conv.weight"])
    w, sp = first["conv.weight"], start["shrink-perturb"]["conv.weight"]
    assert (sp - 0.6 * w).abs().max() < 0.01 * 4  # sigma * a fresh kaiming draw is small
    assert torch.equal(start["reset"]["conv.weight"], w) and torch.equal(start["reset"]["blocks.1.conv1.weight"],
                                                                         first["blocks.1.conv1.weight"])
    for name in ("blocks.2.conv1.weight", "fc.weight"):  # resnet8's top stage is blocks.2
        assert not torch.equal(start["reset"][name], first[name])
    r20 = tiny_config(model="resnet20")
    assert warm.layers_to_reset(r20, models.build("resnet20", 16, 10, seed=0)) == ["blocks.6", "blocks.7", "blocks.8",
                                                                                   "fc"]
    trunk_config = json.loads((tmp_path / "ws" / "manifest.json").read_text())["config"]["data"]
    assert trunk_config["train_fraction"] == 0.5  # the first phase saw half the data


def test_parallel_warm_start_arms_match_sequential_ones(tmp_path, cache, monkeypatch):
    from rewind.studies import plasticity as warm

    config = tiny_config(data_dir=cache, steps="30it", second_steps="30it", eval_every="30it")
    alone = warm.run(config, tmp_path / "alone")
    sizes = stacked_sizes(monkeypatch)
    together = warm.run(config.with_values(parallel=4), tmp_path / "together")
    assert sizes == [4]
    assert together.arm.tolist() == alone.arm.tolist()
    assert together.final_test_acc.tolist() == pytest.approx(alone.final_test_acc.tolist(), abs=0.05)
    for arm in warm.ARMS:
        a, b = (runs.read(next((tmp_path / how / "branches").glob(f"warm-{arm}-*"))).stage("second").load(30)
                .tensors["blocks.2.conv2.weight"] for how in ("alone", "together"))
        assert (a - b).norm() / a.norm() < 0.02

"""Critical periods (`rewind critical`): the trunk trained once, continuations from each removal
point (stacked with --parallel), regulariser arms, deficit windows."""

import json

import pandas as pd
import pytest
import torch

from conftest import load, run_cli, tiny_config
from rewind import launch, steps
from rewind.studies import common, critical
from rewind.archive import run as runs
from rewind.errors import UserError
from rewind.train.trunk import train


def test_critical_period_sweep_trains_the_trunk_once(tmp_path, cache):
    config = tiny_config(data_dir=cache, deficit="blur(size=4)", switch_at="0,20,40it", after="20it", lr_milestones="")
    summary = critical.run(config, tmp_path / "cp")
    assert launch.pending(critical.plan(config, tmp_path / "cp")) == []  # the plan names what run trained
    # Run as jobs (trunk, then each continuation, then the summary), the same table, bit for bit.
    jobs = critical.plan(config, tmp_path / "jobs")
    common.run(jobs)
    assert [j.name for j in jobs.jobs] == ["trunk", "switch_at-0", "switch_at-20", "switch_at-40"]
    assert pd.read_csv(tmp_path / "jobs" / "results.csv").equals(pd.read_csv(tmp_path / "cp" / "results.csv"))
    assert summary.switch_at.tolist() == [0, 20, 40] and summary.replicates.tolist() == [1, 1, 1]
    assert set(summary.order) == {"blur(size=4)-then-normal"}
    assert (tmp_path / "cp" / "results.png").stat().st_size > 10_000  # a drawn figure, not an empty file
    manifest = json.loads((tmp_path / "cp" / "manifest.json").read_text())
    assert manifest["config"]["train"]["deficit"] == "blur(size=4):0it-" and manifest["total_iterations"] == 40
    for t in (0, 20, 40):
        [branch] = (tmp_path / "cp" / "branches").glob(f"critical-{t}-*")
        start = runs.read(branch).stage("continuation").load(t).tensors
        assert all(torch.equal(start[k], v) for k, v in load(tmp_path / "cp", "trunk", t).items())
        assert runs.read(branch).stage("continuation").steps()[-1] == t + 20


def test_regulariser_arms_are_named_in_the_order_the_network_saw_them(tmp_path, cache):
    """--deficit no-weight-decay, deficit first: weight decay off until t, then on, to one total length."""
    config = tiny_config(data_dir=cache, deficit="no-weight-decay", switch_at="0,10it", total_steps="20it",
                         lr_milestones="", eval_every="10it")
    critical.run(config, tmp_path / "wd")
    results = pd.read_csv(tmp_path / "wd" / "results.csv")
    assert results.switch_at.tolist() == [0, 10] and results.order.tolist() == ["weight decay off-then-on"] * 2

    def decay(stage, step):  # the weight decay of the step before `step`, as the optimizer held it
        return stage.load(step, with_state=True).state["optimizer"]["param_groups"][0]["weight_decay"]

    assert decay(runs.read(tmp_path / "wd").stage("trunk"), 10) == 0.0  # off before t = 10
    for t in (0, 10):
        [branch] = (tmp_path / "wd" / "branches").glob(f"critical-{t}-*")
        continuation = runs.read(branch).stage("continuation")
        assert continuation.steps()[-1] == 20 and decay(continuation, 20) == config.train.weight_decay  # then on


def test_critical_period_windows_and_points():
    config = tiny_config(deficit="blur", window="10it", starts="0,20it", after="30it")
    trunk_deficit, length, arms = critical.plan_arms(config, 16)
    assert trunk_deficit == "" and length == 20
    assert [(a.start, a.deficit, a.end) for a in arms] == [(0, "blur:0it-10it", 40), (20, "blur:20it-30it", 60)]
    assert steps.points("0,20,40,60,80ep", 391) == [0, 7820, 15640, 23460, 31280]
    on_then_off = tiny_config(deficit="no-weight-decay", switch_at="0,5ep", direction="normal-then-deficit")
    added = critical.plan_arms(on_then_off, 16)
    assert added[0] == "" and [a.deficit for a in added[2]] == ["no-weight-decay:0it-", "no-weight-decay:80it-"]
    assert critical.order_label(on_then_off) == "weight decay on-then-off"
    # A fixed total: every arm ends at the same iteration, whatever its switch point (Golatkar et al.).
    fixed = critical.plan_arms(on_then_off.with_values(total_steps="10ep"), 16)[2]
    assert [(a.start, a.end) for a in fixed] == [(0, 160), (80, 160)]
    with pytest.raises(UserError, match="total-steps"):
        critical.plan_arms(on_then_off.with_values(total_steps="5ep"), 16)


def test_train_with_a_deficit_window_and_a_bad_one(tmp_path, cache, capsys):
    code, _, err = run_cli(["train", "--data", "synthetic", "--model", "resnet8", "--width", "8", "--steps", "20it",
                            "--deficit", "blurr:0it-10it", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.count("\n") == 1 and "bad phase 'blurr:0it-10it'" in err
    plain = tiny_config(data_dir=cache, steps="20it")
    train(plain, tmp_path / "plain")
    # A window that opens after the run ends changes nothing, bit for bit ...
    train(plain.with_values(deficit="vertical-flip:20it-30it"), tmp_path / "late")
    final = {name: load(tmp_path / name, "trunk", 20) for name in ("plain", "late")}
    assert all(torch.equal(final["plain"][k], final["late"][k]) for k in final["plain"])
    # ... one inside the run changes the weights from its start on, and not before.
    deficit = "no-weight-decay:5it-10it,vertical-flip:5it-15it"
    train(plain.with_values(deficit=deficit), tmp_path / "ok")
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["config"]["train"]["deficit"] == deficit
    assert all(torch.equal(load(tmp_path / "plain", "trunk", 5)[k], v) for k, v in load(tmp_path / "ok", "trunk", 5).items())
    assert not torch.equal(load(tmp_path / "plain", "trunk", 10)["conv.weight"], load(tmp_path / "ok", "trunk", 10)["conv.weight"])


def test_parallel_continuations_from_different_removal_points(tmp_path, cache):
    """Continuations that start at different iterations train together, each on its own iterations."""
    config = tiny_config(data_dir=cache, deficit="blur(size=4)", switch_at="0,16,32it", after="16it", lr_milestones="",
                         train_examples=1024)  # 16 full batches per epoch: starts need not align
    alone = critical.run(config, tmp_path / "alone")
    together = critical.run(config.with_values(parallel=3), tmp_path / "together")
    assert together.final_test_acc_mean.tolist() == pytest.approx(alone.final_test_acc_mean.tolist(), abs=0.05)
    for t in (0, 16, 32):
        [a] = (tmp_path / "alone" / "branches").glob(f"critical-{t}-*")
        [b] = (tmp_path / "together" / "branches").glob(f"critical-{t}-*")
        wa = runs.read(a).stage("continuation").load(t + 16).tensors["blocks.2.conv2.weight"]
        wb = runs.read(b).stage("continuation").load(t + 16).tensors["blocks.2.conv2.weight"]
        assert (wa - wb).norm() / wa.norm() < 0.02  # float rounding of grouped convolutions only
    metrics = pd.read_csv(next((tmp_path / "together" / "branches").glob("critical-32-*")) / "continuation" / "metrics.csv")
    assert metrics[metrics.split == "test"].step.tolist() == [40, 48]  # its own iterations: 32..48, eval every 40


def test_parallel_starts_must_share_the_epoch_position(tmp_path, cache):
    config = tiny_config(data_dir=cache, deficit="blur", switch_at="0,10it", after="8it", parallel=2)  # 1000 / 64
    with pytest.raises(UserError, match="same point of an epoch"):
        critical.run(config, tmp_path / "x")

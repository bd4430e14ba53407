"""Pre-training modes: the pre-trained weights are the trunk's iteration 0, pre-training takes the
place of the first schedule steps, and its steps count epochs of its own data."""

import pytest
import torch

from conftest import load, tiny_config
from rewind.studies import imp
from rewind.archive import run as runs
from rewind.train.trunk import Setup, train


@pytest.mark.parametrize("mode", ["blur", "rotation", "random-labels", "subset"])
def test_pretrained_weights_are_the_trunks_iteration_0(tmp_path, cache, mode):
    config = tiny_config(data_dir=cache, steps="40it", pretrain=mode, pretrain_steps="20it")  # main run: 20
    train(config, tmp_path / "run")
    pre = runs.read(tmp_path / "run").stage("trunk/pretrain")
    assert pre.steps()[-1] == 20
    pretrained, trunk0 = pre.load(20).tensors, load(tmp_path / "run", "trunk", 0)
    if mode == "rotation":
        assert pretrained["fc.weight"].shape[0] == 4 and trunk0["fc.weight"].shape[0] == 10  # fresh 10-way head
        assert not torch.equal(pretrained["conv.weight"], load(tmp_path / "run", "trunk", 20)["conv.weight"])
    body = [k for k in trunk0 if not k.startswith("fc.")]
    assert all(torch.equal(pretrained[k], trunk0[k]) for k in body)
    # Pre-training changed the weights: iteration 0 is not a fresh init.
    fresh = tiny_config(data_dir=cache, steps="20it")
    train(fresh, tmp_path / "fresh")
    assert not torch.equal(load(tmp_path / "fresh", "trunk", 0)["conv.weight"], trunk0["conv.weight"])


def test_pretraining_takes_the_place_of_the_first_schedule_steps(tmp_path, cache):
    """OpenLTH's train_start_step: after P pre-training iterations, main-run step t trains with the
    learning rate and batch of schedule step P + t, and the run ends where the schedule ends (T)."""
    from rewind.analysis.archive import reopen
    from rewind.analysis.lmc import child_seeds, child_states

    P, T = 10, 30
    plain = tiny_config(data_dir=cache, steps=f"{T}it", lr_milestones="15it", eval_every="20it")
    config = plain.with_values(pretrain="blur", pretrain_steps=f"{P}it")
    train(config, tmp_path / "run")
    run = runs.read(tmp_path / "run")
    assert run.stage("trunk/pretrain").steps()[-1] == P
    assert run.stage("trunk").steps()[-1] == T - P and run.manifest.data["total_iterations"] == T - P
    assert run.manifest.data["schedule_offset"] == P
    schedule = Setup.create(plain).plan  # the schedule of a run without pre-training
    main = Setup.create(config)
    assert [main.plan.lr_at(t) for t in range(T - P)] == [schedule.lr_at(P + t) for t in range(T - P)]
    plain_state, state = Setup.create(plain).state(main.new_model()), main.state(main.new_model())
    for t in (0, 13):
        assert all(torch.equal(a, b) for a, b in zip(state.batch(t), plain_state.batch(P + t)))

    def lr_used(stage, step):  # the learning rate of the step before `step`, as the optimizer held it
        return stage.load(step, with_state=True).state["optimizer"]["param_groups"][0]["lr"]

    trunk = run.stage("trunk")
    assert [lr_used(trunk, s) for s in (5, 10, 20)] == [schedule.lr_at(P + s - 1) for s in (5, 10, 20)]
    assert lr_used(trunk, 10) == pytest.approx(0.005)  # schedule step 19 is past the milestone at 15
    # Branches of the trunk follow the same plan: an IMP level rewound to 10 and a stability child.
    [level] = imp.run(config.with_values(levels=1, rewind_iter="10", save_every="5it"), from_=tmp_path / "run")
    stage = runs.read(level.branch).stage("level_01")
    assert stage.steps()[-1] == T - P and lr_used(stage, 15) == schedule.lr_at(P + 14) == pytest.approx(0.005)
    reopened, setup = reopen(tmp_path / "run")
    [child, _] = child_states(reopened, setup, 10, child_seeds("order-and-augmentation", 0))
    assert (child.plan.offset, child.plan.total) == (P, T - P)
    # The old behaviour as an option: the whole schedule after the pre-training.
    restart = Setup.create(config.with_values(pretrain_schedule="restart")).plan
    assert restart.total == T and [restart.lr_at(t) for t in range(T)] == [schedule.lr_at(t) for t in range(T)]
    assert config.hash() != config.with_values(pretrain_schedule="restart").hash()
    assert plain.hash() == plain.with_values(pretrain_schedule="restart").hash()  # no pre-training: no change


def test_pretraining_steps_count_epochs_of_the_pretraining_data():
    from rewind.train.pretrain import pretrain_plan, schedule_offset

    subset = tiny_config(pretrain="subset", pretrain_subset=0.5, pretrain_steps="2ep")  # 500 examples, batch 32
    assert pretrain_plan(subset, 1000).total == 2 * 16 == schedule_offset(subset, 1000)
    assert schedule_offset(subset.with_values(pretrain="blur"), 1000) == 2 * 32

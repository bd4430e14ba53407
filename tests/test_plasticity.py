"""The plasticity studies of `rewind warm-start --study`: first-phase lengths, stopping by fit, layer
groups reset, shrink-perturb sweeps, learning-rate and size settings, and the table they write."""

import pandas as pd
import pytest
import torch

from conftest import BN_BUFFERS, run_cli, tiny_config
from rewind import models
from rewind.archive import run as runs
from rewind.errors import UserError
from rewind.studies import plasticity as P
from rewind.train.trunk import train
from rewind.train.warmstart import layer_groups, reset_layers, top_groups

pytestmark = pytest.mark.usefixtures("one_thread")
# 256 examples in batches of 32: 8 iterations an epoch.
SMALL = dict(train_examples=256, test_examples=128, width=4, steps="8it", second_steps="6it", eval_every="2it",
             log_every="2it", save_every="4it", stats_every="0it", last_evals=2)


def small(cache, **values):
    return tiny_config(data_dir=cache, **{**SMALL, **values})


def branch(out, table, **where):
    rows = table
    for k, v in where.items():
        rows = rows[rows[k] == v]
    [path] = rows.branch.tolist()
    return runs.read(out / path).stage("second")


def test_length_study_branches_from_the_first_phase_checkpoints(tmp_path, cache):
    out = tmp_path / "len"
    config = small(cache, study="length", first_steps="0,3,8it")
    table = P.run(config, out)
    assert table.columns[:2].tolist() == ["study", "arm"]
    assert {"first_steps", "final_test_acc", "mean_last_test_acc", "gap_to_scratch"} <= set(table.columns)
    assert table.arm.tolist() == ["warm"] * 3 + ["scratch"] and table.first_steps.tolist()[:3] == [0, 3, 8]
    assert (out / "results.png").stat().st_size > 0 and (out / "results.csv").exists()
    first = runs.read(out).stage("trunk")
    for k in (0, 3, 8):  # each arm starts from the first phase at k: its parameters, fresh BN statistics
        start = branch(out, table, first_steps=k).load(0).tensors
        held = first.load(k).tensors
        for name, v in held.items():
            if not name.endswith(BN_BUFFERS):
                assert torch.equal(start[name], v), (k, name)
    # A first phase of length 0 is training from scratch, bit for bit.
    zero, scratch = branch(out, table, first_steps=0).load(6).tensors, branch(out, table, arm="scratch").load(6).tensors
    assert all(torch.equal(zero[k], scratch[k]) for k in scratch)
    assert table.set_index("first_steps").loc[0, "gap_to_scratch"] == 0.0
    # The papers' metric: the mean of the last K (2) evaluations, from the arm's own metrics.
    metrics = pd.read_csv(out / table.branch[1] / "second" / "metrics.csv")
    assert table.mean_last_test_acc[1] == pytest.approx(metrics[metrics.split == "test"].acc.tail(2).mean())
    # A new length trains only its own branch; the trunk gains the checkpoint, as if saved the first time.
    trained = []
    original = P.train_segments
    P.train_segments = lambda segments, parallel: trained.append(len(segments)) or original(segments, parallel)
    try:
        again = P.run(config.with_values(first_steps="0,3,4,8it"), out)
    finally:
        P.train_segments = original
    assert trained == [1] and again.first_steps.tolist()[:4] == [0, 3, 4, 8]
    assert again.set_index("branch").loc[table.branch, "final_test_acc"].tolist() == table.final_test_acc.tolist()
    train(P.first_phase(config).with_values(save_at="3,4"), tmp_path / "saved")
    for k in (3, 4):
        filled, saved = first.load(k).tensors, runs.read(tmp_path / "saved").stage("trunk").load(k).tensors
        assert all(torch.equal(filled[n], saved[n]) for n in saved), k


def test_carried_optimizer_state_is_the_first_phase_s(tmp_path, cache):
    out = tmp_path / "carry"
    table = P.run(small(cache, study="length", first_steps="5it", optimizer_state="carry"), out)
    trunk_state = runs.read(out).stage("trunk").load(5, with_state=True).state["optimizer"]["state"]
    arm_state = branch(out, table, arm="warm").load(0, with_state=True).state["optimizer"]["state"]
    assert trunk_state.keys() == arm_state.keys()
    assert all(torch.equal(trunk_state[i]["momentum_buffer"], arm_state[i]["momentum_buffer"]) for i in trunk_state)
    scratch = branch(out, table, arm="scratch").load(0, with_state=True).state["optimizer"]["state"]
    assert scratch == {}  # scratch starts with a fresh optimizer


def test_until_train_acc_stops_after_the_first_pass_at_or_above_it(tmp_path, cache):
    config = small(cache, until_train_acc=0.2, steps="24it", eval_every="3it")  # 8 iterations a pass
    result = train(config, tmp_path / "fit")
    metrics = pd.read_csv(tmp_path / "fit" / "trunk" / "metrics.csv")
    fit = metrics[metrics.split == "fit"]
    assert fit.step.tolist() == list(range(8, result.end + 1, 8))  # one row per pass over the data
    assert (fit.acc.iloc[:-1] < 0.2).all() and fit.acc.iloc[-1] >= 0.2 and result.end < 24
    assert result.end in metrics[metrics.split == "test"].step.tolist()  # evaluated where it stops
    stage = runs.read(tmp_path / "fit").stage("trunk")
    assert max(stage.steps()) == result.end and metrics.step.max() == result.end
    assert runs.read(tmp_path / "fit").manifest.data["final_step"] == result.end
    # Run again: nothing trains; lose the stop checkpoint (a kill -9 before it was recorded): it stops there again.
    assert train(config, tmp_path / "fit").resumed_from == result.end
    weights = stage.load(result.end).tensors
    run = runs.read(tmp_path / "fit")
    for name in [k for k in run.manifest.files if f"it{result.end:08d}" in k]:
        del run.manifest.files[name]
    run.manifest.save()
    again = train(config, tmp_path / "fit")
    assert again.end == result.end and again.resumed_from < result.end
    assert all(torch.equal(v, runs.read(tmp_path / "fit").stage("trunk").load(result.end).tensors[k])
               for k, v in weights.items())
    # Never reached: the cap ends it, and the study's table says so. The first phase's fit is checked
    # once per pass over its own half (128 examples: every 4 iterations, Ash & Adams's code).
    out = tmp_path / "ws"
    table = P.run(small(cache, until_train_acc=1.0, study="size"), out)
    assert table.stopped_at.tolist() == [6, 6] and table.reached_fit.tolist() == [False, False]
    assert table.first_stopped_at[0] == 8 and not table.first_reached_fit[0]
    [first] = [pd.read_csv(f) for f in out.glob("*/trunk/metrics.csv")]
    assert first[first.split == "fit"].step.tolist() == [4, 8]


@pytest.mark.parametrize("model, blocks, groups", [("resnet18", 1, 6), ("resnet8", 0, 5)])
def test_resetting_groups_j_to_g_copies_exactly_those_tensors(model, blocks, groups):
    net, fresh = (models.build(model, 4, 10, seed=s, blocks=blocks) for s in (0, 1))
    assert len(layer_groups(net)) == groups
    assert layer_groups(net)[0] == ["conv", "bn"] and layer_groups(net)[-1] == ["fc"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    j = groups - 2  # the top stage, the one below it and fc
    copied = set(reset_layers(net, fresh, top_groups(net, j)))
    stages = net.stages[-2:]
    expect = {k for k in before if k.startswith("fc.") or any(k.startswith(f"blocks.{i}.") for s in stages for i in s)}
    assert copied == expect
    fresh_state = fresh.state_dict()
    for k, v in net.state_dict().items():
        assert torch.equal(v, fresh_state[k] if k in expect else before[k]), k
    assert set(top_groups(net, 1)) == {p for g in layer_groups(net) for p in g}
    with pytest.raises(UserError, match=f"groups 1..{groups}"):
        top_groups(net, groups + 1)


def test_shrink_with_lambda_1_and_sigma_0_is_the_warm_start(tmp_path, cache):
    out = tmp_path / "sp"
    table = P.run(small(cache, study="shrink", shrink="1.0,0.5", perturb_sigma="0"), out)
    assert table.arm.tolist() == ["warm", "shrink-perturb", "shrink-perturb", "scratch"]
    assert table.lam.tolist()[:3] == [1.0, 1.0, 0.5] and table.sigma.tolist()[:3] == [0.0, 0.0, 0.0]
    warm, same = branch(out, table, arm="warm").load(6).tensors, branch(out, table, arm="shrink-perturb", lam=1.0)
    assert all(torch.equal(warm[k], v) for k, v in same.load(6).tensors.items())
    half = branch(out, table, arm="shrink-perturb", lam=0.5).load(0).tensors
    first = runs.read(out).stage("trunk").load(8).tensors
    assert torch.equal(half["conv.weight"], 0.5 * first["conv.weight"])
    assert table.gap_to_scratch.tolist()[0] == table.gap_to_scratch.tolist()[1]


def test_reset_lr_and_size_studies_plan_their_arms(cache):
    reset = P.specs(small(cache, study="reset", reset_from="3,5"))
    assert [(a.arm, a.values.get("groups_reset")) for a in reset.arms] == [("warm", 0), ("reset", 1), ("reset", 3),
                                                                          ("scratch", None)]
    assert [a.op for a in reset.arms] == [{}, {"reset_from": 5}, {"reset_from": 3}, {}]
    lr = P.specs(small(cache, study="lr", first_lr="0.05,0.1", second_lr="0.01,0.5"))
    assert [s.folder for s in lr.settings] == ["lr0.05", "lr0.1"]
    assert [s.first.train.lr for s in lr.settings] == [0.05, 0.1]
    scratch = [a for a in lr.arms if a.arm == "scratch"]
    # The scratch arm of a second-phase rate is trained once, under the first setting, and every arm compares to it.
    assert [(a.setting, a.second.train.lr) for a in scratch] == [("lr0.05", 0.01), ("lr0.05", 0.5)]
    warm = [a for a in lr.arms if a.arm == "warm"]
    assert [(a.values["first_lr"], a.values["second_lr"]) for a in warm] == [(0.05, 0.01), (0.05, 0.5), (0.1, 0.01),
                                                                            (0.1, 0.5)]
    assert [a.baseline for a in warm] == [s.branch for s in scratch] * 2
    size = P.specs(small(cache, study="size", model="resnet18", widths="4,8", depths="1,2", replicates=2))
    assert [s.folder for s in size.settings][:3] == ["w4-d1-rep-00", "w4-d1-rep-01", "w4-d2-rep-00"]
    assert {(s.first.model.width, s.first.model.blocks) for s in size.settings} == {(4, 1), (4, 2), (8, 1), (8, 2)}
    assert len(size.arms) == 16 and len({a.branch for a in size.arms}) == 16
    # Optimizers compared: one first phase each (Berariu Fig. 2), each second phase with its own.
    opt = P.specs(small(cache, study="length", first_steps="0,4it", optimizers="sgd:0.05,adam:0.001"))
    assert [s.folder for s in opt.settings] == ["sgd0.05-m0", "adam0.001"]
    assert [(s.first.train.optimizer, s.first.train.lr) for s in opt.settings] == [("sgd", 0.05), ("adam", 0.001)]
    assert [(a.arm, a.values["optimizer"], a.second.train.optimizer) for a in opt.arms][2:] == [
        ("scratch", "sgd", "sgd"), ("warm", "adam", "adam"), ("warm", "adam", "adam"), ("scratch", "adam", "adam")]
    assert opt.arms[3].baseline == opt.arms[5].branch


@pytest.mark.parametrize("args, message", [
    (["--shrink", "0.3,0.6"], "--study arms takes one shrink"),
    (["--study", "length", "--first-steps", "0,99ep"], "goes beyond the first phase"),
    (["--optimizer-state", "carry", "--second-optimizer", "adam"], "needs one optimizer in both phases"),
    (["--study", "reset", "--reset-from", "7"], "has layer groups 1..5"),
    (["--study", "shrink", "--perturb-sigma", "0,-1"], "perturb_sigma must be comma-separated numbers >= 0"),
    (["--until-train-acc", "1.5"], "until_train_acc must be in [0, 1]"),
])
def test_bad_study_settings_are_one_line(tmp_path, capsys, cache, args, message):
    code, _, err = run_cli(["warm-start", "--data", "synthetic", "--model", "resnet8", "--width", "4",
                            "--train-examples", "64", "--test-examples", "32", "--steps", "4it", "--data-dir", cache,
                            "--out", str(tmp_path / "r"), *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_the_smooth_transition_follows_the_run_s_steps():
    """Berariu et al. Fig. 3: p = 1 - gamma^(50 n / N), n the current step and N the run's total steps."""
    from rewind.data.loader import DeviceLoader
    from rewind.data.phases import Phase, PhaseSchedule, transition_draw, transition_probability

    ipe, epochs = 391, 500  # the paper's run: 500 epochs' worth of steps
    p = [float(transition_probability(0.99, e * ipe, epochs * ipe)) for e in (1, 10, 100, 500)]
    assert p == pytest.approx([0.0010, 0.0100, 0.0956, 0.3950], abs=5e-4)
    assert transition_probability(0.99, 0, 1000) == 0.0
    # Each example drawn on its own: from the full set with probability p, else from the subset; full batches.
    n_examples, batch, total = 400, 50, 100
    images = torch.zeros(n_examples, 3, 4, 4, dtype=torch.uint8)
    labels = torch.arange(n_examples) % 10
    loader = DeviceLoader(images, labels, batch, 0, 0, augmentation="none", mean=(0,) * 3, std=(1,) * 3)
    phase = Phase("transition", 0, total, {"gamma": 0.9, "fraction": 0.25}, seed=3)
    schedule = PhaseSchedule([phase])
    subset = schedule.subset_indices(Phase("subset", 0, None, {"fraction": 0.25}, 3), loader)
    assert len(subset) == 100
    for t in (0, 10, 60):
        takes = torch.stack([transition_draw(Phase("transition", 0, total, {"gamma": 0.9}, seed=s), t, batch,
                                             n_examples, subset)[1] for s in range(200)]).double()
        expected = float(transition_probability(0.9, t, total))
        se = (expected * (1 - expected) / takes.numel()) ** 0.5
        assert abs(takes.mean() - expected) <= 4 * se + 1e-12, (t, takes.mean(), expected)
        idx, take = transition_draw(phase, t, batch, n_examples, subset)
        assert torch.equal(schedule.examples(loader, t), idx) and len(idx) == batch
        assert set(idx[~take].tolist()) <= set(subset.tolist())
        assert torch.equal(schedule.batch(loader, t)[1], labels[idx])
    # Not a permutation: the subset's 100 examples, drawn 50 at a time with replacement, repeat within a batch.
    early = [transition_draw(phase, t, batch, n_examples, subset)[0] for t in range(5)]
    assert any(len(set(i.tolist())) < batch for i in early)
    with pytest.raises(UserError, match="needs a window with an end"):
        Phase("transition", 0, None, {"gamma": 0.9})


def test_transition_study_is_one_phase_from_the_init(tmp_path, cache):
    out = tmp_path / "tr"
    config = small(cache, study="transition", transition_gamma="0,1")
    table = P.run(config, out)
    assert table.arm.tolist() == ["transition", "transition", "scratch"] and table.gamma.tolist()[:2] == [0.0, 1.0]
    assert not (out / runs.MANIFEST).exists()  # no first phase: the arms are whole runs
    # gamma 0: p = 1 from the second example on; gamma 1: the subset alone. Both start from the init.
    init = P.Setup.create(P.specs(config).arms[1].second).new_model().state_dict()
    start = branch(out, table, gamma=1.0).load(0).tensors
    assert all(torch.equal(start[k], init[k].cpu()) for k in init)
    metrics = pd.read_csv(out / table.branch[2] / "second" / "metrics.csv")
    assert len(metrics[metrics.split == "test"]) == 4 and (out / "results.png").exists()


@pytest.mark.parametrize("n, ratio", [(1, 0.0), (3, 0.5), (4, 1.0)])
def test_stage_splits_follow_berariu_a3(n, ratio):
    from rewind.data.phases import stage_parts, stage_split

    labels = torch.arange(1000) % 10
    parts = stage_parts(labels, 10, n, ratio, seed=1)
    classes, uniform = stage_split(labels, 10, n, ratio, seed=1)
    assert len(parts) == n + 1 and sorted(torch.cat(classes).tolist()) == list(range(10))  # a class partition
    assert {len(c) for c in classes} <= {10 // (n + 1), -(-10 // (n + 1))}
    everything = torch.cat(parts)
    assert sorted(everything.tolist()) == list(range(1000))  # the parts are disjoint, their union is all
    # The uniform part: ratio r of the data in n + 1 nearly equal pieces, drawn regardless of class.
    pooled = torch.cat(uniform)
    assert len(pooled) == round(ratio * 1000) and len(set(pooled.tolist())) == len(pooled)
    assert max(map(len, uniform)) - min(map(len, uniform)) <= 1
    for p, u, c in zip(parts, uniform, classes):
        rest = sorted(set(p.tolist()) - set(u.tolist()))  # part i = U_i and the other examples of C_i
        assert set(u.tolist()) <= set(p.tolist()) and set(labels[rest].tolist()) <= set(c.tolist())
        assert len(rest) == int((torch.isin(labels, c) & ~torch.isin(torch.arange(1000), pooled)).sum())
    if ratio == 0.0:  # stage i holds exactly the classes C_1..C_i
        for i in range(n + 1):
            assert set(labels[torch.cat(parts[:i + 1])].tolist()) == set(torch.cat(classes[:i + 1]).tolist())
    if ratio == 1.0:
        assert all(len(set(labels[p].tolist())) == 10 for p in parts)


def test_stages_study_trains_on_growing_data_then_all(tmp_path, cache):
    from rewind.data.phases import PhaseSchedule, parse_list

    config = small(cache, study="stages", stages="2", stage_ratio="0.5", steps="4it", second_steps="4it")
    [arm, scratch] = P.specs(config).arms
    assert arm.second.train.steps == "12it" and scratch.second.train.steps == "4it"
    setup = P.Setup.create(arm.second)
    schedule = PhaseSchedule(parse_list(arm.second.train.deficit, 8), 10)
    loader = setup.train_loader()
    seen = [set(schedule.examples(loader, t).tolist()) for t in range(12)]
    from rewind.data.phases import stage_parts

    parts = stage_parts(loader.labels, 10, 2, 0.5, 0)
    assert all(s <= set(parts[0].tolist()) for s in seen[:4])
    assert all(s <= set(torch.cat(parts[:2]).tolist()) for s in seen[4:8]) and not all(
        s <= set(parts[0].tolist()) for s in seen[4:8])
    assert [schedule.resets_optimizer(t) for t in (0, 4, 8, 9)] == [False, True, True, False]
    table = P.run(config, tmp_path / "st")
    assert table.arm.tolist() == ["stages", "scratch"] and table.stages[0] == 2
    metrics = pd.read_csv(tmp_path / "st" / table.branch[0] / "second" / "metrics.csv")
    assert metrics.step.max() == 12
    # Shrink-perturb at the start of each later stage: the stage's end, shrunk (sigma 0), is what trains on.
    shrunk = P.run(config.with_values(stage_shrink=True, shrink="0.5", perturb_sigma="0"), tmp_path / "st")
    assert shrunk.lam[0] == 0.5 and shrunk.branch[1] == table.branch[1]  # the scratch arm is reused
    plain = runs.read(tmp_path / "st" / table.branch[0]).stage("second")
    after = runs.read(tmp_path / "st" / shrunk.branch[0]).stage("second")
    a, b = plain.load(4).tensors, after.load(4).tensors
    assert all(torch.equal(b[k], 0.5 * a[k]) for k in a if not k.endswith(BN_BUFFERS))


def test_replicates_give_mean_and_spread_per_arm():
    from rewind.analysis.plasticity import summarise

    table = pd.DataFrame({"study": "length", "arm": ["warm", "scratch"] * 2, "first_steps": [5, None] * 2,
                          "replicate": [0, 0, 1, 1], "final_test_acc": [0.5, 0.7, 0.6, 0.8],
                          "mean_last_test_acc": [0.4, 0.6, 0.5, 0.8], "best_test_acc": [0.6, 0.8, 0.7, 0.9],
                          "gap_to_scratch": [-0.2, 0.0, -0.2, 0.0], "mean_last_gap_to_scratch": [-0.2, 0, -0.3, 0],
                          "branch": ["a", "b", "c", "d"]})
    summary = summarise(table).set_index("arm")
    assert summary.loc["warm", "final_test_acc"] == pytest.approx(0.55)
    assert summary.loc["warm", "final_test_acc_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert summary.loc["scratch", "mean_last_test_acc"] == pytest.approx(0.7)
    assert summary.replicates.tolist() == [2, 2] and summary.loc["warm", "first_steps"] == 5
    assert pd.isna(summary.loc["scratch", "first_steps"]) and "replicate" not in summary

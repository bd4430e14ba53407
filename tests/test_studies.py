"""The studies built on a trunk: pre-training, parallel replicates, perturbations, critical periods,
early-phase statistics (online and offline), Fisher trace and linear mode connectivity."""

import json
import shutil

import pandas as pd
import pytest
import torch

from conftest import run_cli, tiny_config
from rewind import launch, models, steps
from rewind.studies import common, critical, imp
from rewind.archive import run as runs
from rewind.errors import UserError
from rewind.prune import masks as M
from rewind.train.trunk import Setup, train

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
SHORT = dict(steps="60it", lr_milestones="40it", eval_every="20it", rewind_iter="20it", levels=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, cache):
    """A trunk with online statistics and Fisher trace, and a one-level IMP branch at k=20."""
    root = tmp_path_factory.mktemp("studies") / "run"
    config = tiny_config(data_dir=cache, fisher_every="20it", stats_every="10it", stats_until="40it", **SHORT)
    [result] = imp.run(config, out=root)
    return config, root, result


def load(root, stage, step):
    return runs.read(root).stage(stage).load(step).tensors


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


def test_parallel_replicates_match_sequential_ones(tmp_path, cache):
    base = tiny_config(data_dir=cache, replicates=2, **SHORT)
    seq = imp.run(base, out=tmp_path / "seq")
    par = imp.run(base.with_values(parallel=2), out=tmp_path / "par")
    for a, b in zip(seq, par):
        assert [r["remaining"] for r in a.rows] == [r["remaining"] for r in b.rows]
        # Grouped convolutions round differently from plain ones; float64 equality is tested in test_replicas.
        assert [r["final_test_acc"] for r in a.rows] == pytest.approx([r["final_test_acc"] for r in b.rows], abs=0.05)
        trunk_a, trunk_b = load(a.trunk, "trunk", 60), load(b.trunk, "trunk", 60)
        w_a, w_b = trunk_a["blocks.2.conv2.weight"], trunk_b["blocks.2.conv2.weight"]
        assert (w_a - w_b).norm() / w_a.norm() < 0.1
    rep0, rep1 = (load(r.trunk, "trunk", 60)["blocks.2.conv2.weight"] for r in seq)
    assert (rep0 - rep1).norm() / rep0.norm() > 1.0  # what "different" looks like: another seed
    assert pd.read_csv(tmp_path / "par" / "results.csv").replicates.tolist() == [2, 2]


def test_perturbation_branch_keeps_the_plain_mask(archive):
    config, root, plain = archive
    [noisy] = imp.run(config.with_values(perturb="noise", perturb_scale=0.5), from_=root)
    assert "-noise-" in noisy.branch.name
    mask = M.load(plain.branch / "level_01" / "mask.safetensors")
    assert all(torch.equal(mask[n], m) for n, m in M.load(noisy.branch / "level_01" / "mask.safetensors").items())
    start = runs.read(noisy.branch).stage("level_01").load(20).tensors
    rewind = load(root, "trunk", 20)
    for name, m in mask.items():
        assert torch.all(start[name][~m] == 0)
        diff = (start[name] - rewind[name])[m]
        std = (2 / rewind[name][0].numel()) ** 0.5  # kaiming init std of the layer
        assert 0.35 * std < diff.std() < 0.65 * std  # noise of scale 0.5 init std


def test_online_statistics_and_fisher_trace_are_logged(archive):
    _, root, _ = archive
    metrics = pd.read_csv(root / "trunk" / "metrics.csv")
    early = metrics[metrics.split == "early"].set_index("step")
    assert early.index.tolist() == [0, 1, 2, 5, 10, 20, 25, 30, 40]  # dense points and every 10, to 40
    assert early.loc[0, "dist_init_l2"] == 0.0 and early.loc[0, "sign_diff_init"] == 0.0
    assert (early.loc[[10, 20, 40], "dist_init_l2"].diff().dropna() > 0).all()  # moving away from init
    fisher = metrics[metrics.split == "fisher"].set_index("step")
    assert fisher.index.tolist() == [0, 20, 40, 60] and (fisher.trace > 0).all()
    assert (fisher.trace >= fisher.trace_prunable).all()


def test_the_imp_plan_names_what_imp_trained(archive):
    config, root, result = archive
    plan = imp.plan(config, out=root)
    assert [j.path for j in plan.jobs] == [str(root), str(result.branch)] and launch.pending(plan) == []
    # A second level extends the branch: the branch is pending again, the trunk is no job of `--from`.
    assert [j.name for j in launch.pending(imp.plan(config.with_values(levels=2), from_=root))] == ["imp-k20"]


def test_stats_writes_the_early_phase_table_and_mask_overlaps(archive, capsys):
    config, root, plain = archive
    imp.run(config.with_values(levels=2), from_=root)  # a second level in the same branch
    code, out, err = run_cli(["stats", str(root)], capsys)
    assert code == 0, err
    table = pd.read_csv(root / "trunk" / "analysis" / "early_phase.csv")
    assert table.step.tolist() == runs.read(root).stage("trunk").steps()
    assert {"mean_abs_w", "dist_init_l2", "sign_diff_init", "dist_final_l2", "grad_norm"} <= set(table.columns)
    overlaps = pd.read_csv(root / "trunk" / "analysis" / "mask_overlap.csv")
    one_two = overlaps[(overlaps.level_a == 1) & (overlaps.level_b == 2) & (overlaps.branch_a == overlaps.branch_b)]
    assert one_two.jaccard.iloc[0] == pytest.approx(0.8, abs=1e-3)  # level 2 keeps 80% of level 1's weights


def test_stability_reports_a_barrier_per_rewind_point(archive, capsys):
    _, root, _ = archive
    code, out, err = run_cli(["stability", str(root), "--at", "20,40", "--points", "3", "--progress", "none"], capsys)
    assert code == 0, err
    table = pd.read_csv(root / "trunk" / "analysis" / "instability.csv")
    assert table.k.tolist() == [20, 40]
    # By default each child has its own data order and augmentation seeds, and the table says which.
    assert set(table.noise) == {"order-and-augmentation"} and set(table.bn) == {"recompute"}
    seeds = table[["order_seed_a", "aug_seed_a", "order_seed_b", "aug_seed_b"]].values.tolist()
    assert seeds == [[1, 1, 2, 2]] * 2
    for k, barrier in zip(table.k, table.barrier):
        [branch] = (root / "branches").glob(f"stability-k{k}-*")
        curve = pd.read_csv(branch / "interpolation.csv")
        assert len(curve) == 3 and set(curve.bn) == {"recompute"}
        error = curve.test_error
        assert barrier == pytest.approx(max(0, error.max() - (error.iloc[0] + error.iloc[-1]) / 2))
    # The plan of the same command names the branches it trained: nothing left for an executor.
    from rewind.studies.stability import plan as stability_plan

    assert launch.pending(stability_plan(root, "20,40", 3, parallel=2)) == []
    # Again at k=20, interpolating the BatchNorm statistics, with the default points: the same
    # children (no new branch), their path measured at 30 points, both curves kept.
    code, _, err = run_cli(["stability", str(root), "--at", "20", "--bn", "interpolate", "--progress", "none"], capsys)
    table = pd.read_csv(root / "trunk" / "analysis" / "instability.csv")
    assert code == 0, err
    assert list(zip(table.k, table.bn, table.points)) == [(20, "interpolate", 30), (20, "recompute", 3),
                                                          (40, "recompute", 3)]
    [branch] = (root / "branches").glob("stability-k20-*")
    curves = pd.read_csv(branch / "interpolation.csv")
    assert (curves.bn == "interpolate").sum() == 30 and (curves.bn == "recompute").sum() == 3
    assert len(list((root / "branches").glob("stability-k20-*/child_1/checkpoints/*.safetensors"))) > 0


def test_stability_children_draw_their_own_crops(archive):
    """Frankle et al.'s SGD noise: the two children see other crops and flips of an example in an epoch."""
    from rewind.analysis import lmc
    from rewind.analysis.archive import reopen

    _, root, _ = archive
    run, setup = reopen(root)
    seeds = lmc.child_seeds("order-and-augmentation", setup.config.train.aug_seed)
    a, b = (s.loader for s in lmc.child_states(run, setup, 20, seeds))
    for epoch in (0, 3):
        (crop_a, flip_a), (crop_b, flip_b) = a.augmentation_draws(epoch), b.augmentation_draws(epoch)
        differ = (crop_a != crop_b).any(1) | (flip_a != flip_b)
        assert differ.float().mean() > 0.95  # two draws of 81 crops x 2 flips agree for 1 example in 162
    assert not torch.equal(a.order(0), b.order(0))
    # Order-only noise: each example's crop and flip are the trunk's, in another order.
    c, d = (s.loader for s in lmc.child_states(run, setup, 20, lmc.child_seeds("order-only", 0)))
    assert all(torch.equal(x, y) for x, y in zip(c.augmentation_draws(3), d.augmentation_draws(3)))
    assert not torch.equal(c.order(3), d.order(3))


def stacked_sizes(monkeypatch) -> list[int]:
    """Records how many segments each call of the replica trainer trains together."""
    from rewind.train import replicas

    sizes, real = [], replicas.run_segments
    monkeypatch.setattr(replicas, "run_segments", lambda segments: sizes.append(len(segments)) or real(segments))
    return sizes


def test_parallel_stability_children_match_sequential_ones(archive, tmp_path, capsys, monkeypatch):
    """With --parallel 4 the children of k=10 and k=20 train together, those of 20 joining at 20."""
    _, root, _ = archive
    children = {}
    for how, extra in (("sequential", []), ("parallel", ["--parallel", "4"])):
        copy = tmp_path / how
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("stability-*"))
        sizes = stacked_sizes(monkeypatch)
        code, _, err = run_cli(["stability", str(copy), "--at", "10,20", "--points", "3", "--progress", "none",
                                *extra], capsys)
        assert code == 0, err
        assert sizes == ([4] if extra else [])  # all four children in one stacked model
        assert pd.read_csv(copy / "trunk" / "analysis" / "instability.csv").k.tolist() == [10, 20]
        children[how] = [load(next((copy / "branches").glob(f"stability-k{k}-*")), f"child_{seed}", 60)
                         ["blocks.2.conv2.weight"] for k in (10, 20) for seed in (1, 2)]
    # Float rounding of grouped convolutions only (measured under 0.1%), against 3% between the two
    # children of one k, whose data orders differ.
    for a, b in zip(children["sequential"], children["parallel"]):
        assert (a - b).norm() / a.norm() < 0.005
    a1, a2 = children["sequential"][:2]
    assert (a1 - a2).norm() / a1.norm() > 0.01


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
    assert (tmp_path / "cp" / "results.png").exists()
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

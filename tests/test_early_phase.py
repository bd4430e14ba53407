"""The studies read from one trunk's archive: perturbations, online statistics and Fisher trace,
`rewind stats` (early-phase table, mask overlaps) and linear mode connectivity (`rewind stability`)."""

import shutil

import pandas as pd
import pytest
import torch

from conftest import load, run_cli, stacked_sizes, tiny_config
from rewind import launch
from rewind.studies import imp
from rewind.archive import run as runs
from rewind.prune import masks as M

SHORT = dict(steps="60it", lr_milestones="40it", eval_every="20it", rewind_iter="20it", levels=1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, cache):
    """A trunk with online statistics and Fisher trace, and a one-level IMP branch at k=20."""
    root = tmp_path_factory.mktemp("studies") / "run"
    config = tiny_config(data_dir=cache, fisher_every="20it", stats_every="10it", stats_until="40it", **SHORT)
    [result] = imp.run(config, out=root)
    return config, root, result


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


@pytest.mark.slow  # about 50 s on 2 cores: eight children trained; stacking itself is checked in test_replicas
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

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import load, stacked_sizes, tiny_config
from rewind import models
from rewind.studies import imp, imp_trunk
from rewind.archive import run as runs
from rewind.errors import UserError
from rewind.prune import magnitude
from rewind.prune import masks as M
from rewind.train import loop, replicas


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A tiny trunk with a 3-level IMP branch rewound to iteration 20."""
    root = tmp_path_factory.mktemp("imp")
    config = tiny_config(data_dir=str(root / "cache"), levels=3, rewind_iter="20it", steps="60it", lr_milestones="40it",
                         eval_every="20it")
    [result] = imp.run(config, out=root / "run")
    return config, root / "run", result


def level_weights(branch, level, step=None):
    stage = runs.read(branch).stage(f"level_{level:02d}")
    return stage.load(step if step is not None else stage.steps()[-1], with_state=True)


def test_results_table_has_the_expected_densities(trunk):
    config, root, result = trunk
    table = pd.read_csv(result.branch / "results.csv")
    assert table.level.tolist() == [0, 1, 2, 3]
    total = table.remaining.iloc[0]
    assert total == sum(p.numel() for p in models.prunable(models.build("resnet8", 8)).values())
    for level, remaining in zip(table.level, table.remaining):
        assert abs(remaining - total * 0.8**level) <= level  # one weight per level at most
    assert table.density.round(3).tolist() == [1.0, 0.8, 0.64, 0.512]
    assert (table.rewind_iter == 20).all() and (table.final_test_acc > 0.5).all()
    assert (result.branch / "results.png").stat().st_size > 10000
    assert result.branch.parent == root / "branches" and result.branch.name.startswith("imp-k20-")


def test_masks_match_an_independent_global_magnitude_computation(trunk):
    _, root, result = trunk
    trunk_stage = runs.read(root).stage("trunk")
    final = trunk_stage.load(trunk_stage.steps()[-1]).tensors
    mask1 = M.load(result.branch / "level_01" / "mask.safetensors")
    names = list(mask1)
    values = np.concatenate([final[n].abs().numpy().ravel() for n in names])
    k = round(0.2 * values.size)
    threshold = np.sort(values)[k - 1]  # the k-th smallest survives nowhere
    expected = {n: final[n].abs().numpy() > threshold for n in names}
    assert all(np.array_equal(mask1[n].numpy(), expected[n]) for n in names)
    # Level 2 prunes 20% of what level 1 kept, by level 1's final weights.
    mask2 = M.load(result.branch / "level_02" / "mask.safetensors")
    assert all(not (mask2[n] & ~mask1[n]).any() for n in names)


def test_pruned_weights_and_their_momentum_are_exactly_zero(trunk):
    _, _, result = trunk
    for level in (1, 2, 3):
        masks = M.load(result.branch / f"level_{level:02d}" / "mask.safetensors")
        ckpt = level_weights(result.branch, level)
        params = [n for n, _ in models.build("resnet8", 8).named_parameters()]
        momentum = ckpt.state["optimizer"]["state"]
        for name, m in masks.items():
            assert torch.all(ckpt.tensors[name][~m] == 0.0)
            assert torch.all(momentum[params.index(name)]["momentum_buffer"][~m] == 0.0)
            assert torch.all(ckpt.tensors[name][m] != 0.0)  # survivors are trained, not zeroed


def test_level_starts_from_the_masked_trunk_weights_at_k(trunk):
    _, root, result = trunk
    at_k = runs.read(root).stage("trunk").load(20).tensors
    start = level_weights(result.branch, 2, step=20)
    masks = M.load(result.branch / "level_02" / "mask.safetensors")
    for name, t in at_k.items():
        expected = t * masks[name] if name in masks else t
        assert torch.equal(start.tensors[name], expected), name
    assert start.state["optimizer"]["state"] == {}  # fresh optimizer at k, as in the papers


def test_unpruned_rewind_with_trunk_optimizer_retraces_the_trunk(trunk, tmp_path):
    """LR schedule and data order resume at k: with nothing pruned and the trunk's momentum, the
    level must end exactly where the trunk ended."""
    config, root, _ = trunk
    everything = ",".join(M.ones(models.build("resnet8", 8)))
    cfg = config.with_values(levels=1, dense_layers=everything, rewind_optimizer=True)
    [result] = imp.run(cfg, from_=root)
    trunk_stage = runs.read(root).stage("trunk")
    final = trunk_stage.load(trunk_stage.steps()[-1]).tensors
    level = level_weights(result.branch, 1).tensors
    assert all(torch.equal(final[k], level[k]) for k in final)


def test_second_rewind_point_reuses_the_trunk(trunk):
    config, root, _ = trunk
    def trunk_files():  # its training files; trunk/analysis/ holds tables about its branches
        return {p: p.stat().st_mtime_ns for p in (root / "trunk").rglob("*")
                if p.is_file() and "analysis" not in p.parts}

    before = trunk_files()
    [result] = imp.run(config.with_values(rewind_iter="40it", levels=1), from_=root)
    assert result.branch.name.startswith("imp-k40-")
    assert trunk_files() == before
    table = pd.read_csv(root / "trunk" / "analysis" / "imp_results.csv")
    assert {20, 40} <= set(table.rewind_iter)  # the trunk's table lists the earlier branch and this one


def test_one_rewind_point_spelled_two_ways_is_one_branch(trunk):
    config, root, result = trunk
    level = result.branch / "level_01" / "checkpoints"
    before = {p: p.stat().st_mtime_ns for p in level.iterdir()}
    [again] = imp.run(config.with_values(rewind_iter="20", levels=1), from_=root)
    assert again.branch == result.branch
    assert {p: p.stat().st_mtime_ns for p in level.iterdir()} == before  # found complete, not retrained


def test_rewind_point_not_held_lists_the_held_iterations(trunk):
    config, root, _ = trunk
    with pytest.raises(UserError, match=r"no checkpoint at iteration 30; it holds iterations 0, 1, 2, 5, 10, 20"):
        imp.run(config.with_values(rewind_iter="30it"), from_=root)


def test_controls_use_the_plain_branchs_masks(trunk):
    config, root, result = trunk
    plain = M.load(result.branch / "level_02" / "mask.safetensors")
    [reinit] = imp.run(config.with_values(control="random-reinit", levels=2), from_=root)
    assert "random-reinit" in reinit.branch.name
    same = M.load(reinit.branch / "level_02" / "mask.safetensors")
    assert all(torch.equal(plain[n], same[n]) for n in plain)
    start = level_weights(reinit.branch, 2, step=20).tensors
    at_k = runs.read(root).stage("trunk").load(20).tensors
    assert not torch.equal(start["conv.weight"], at_k["conv.weight"] * plain["conv.weight"])

    [rprune] = imp.run(config.with_values(control="random-prune", levels=2), from_=root)
    rand = M.load(rprune.branch / "level_02" / "mask.safetensors")
    assert all(int(rand[n].sum()) == int(plain[n].sum()) for n in plain)  # same per-layer density
    assert not all(torch.equal(rand[n], plain[n]) for n in plain)


def test_parallel_control_trains_with_its_plain_branch(trunk, monkeypatch):
    """With --parallel 2, a control whose plain branch does not exist yet trains beside it, level by level."""
    config, root, _ = trunk
    stacked = stacked_sizes(monkeypatch)
    [control] = imp.run(config.with_values(rewind_iter="10it", control="random-prune", levels=2, parallel=2),
                        from_=root)
    assert stacked == [2, 2]  # levels 1 and 2, each plain + control in one stacked model
    [plain_dir] = [p for p in (root / "branches").glob("imp-k10-*") if "random-prune" not in p.name]
    assert runs.read(plain_dir).manifest.data["status"] == "complete"
    for level in (1, 2):
        plain = M.load(plain_dir / f"level_{level:02d}" / "mask.safetensors")
        rand = M.load(control.branch / f"level_{level:02d}" / "mask.safetensors")
        assert all(int(rand[n].sum()) == int(plain[n].sum()) for n in plain)
        assert not all(torch.equal(rand[n], plain[n]) for n in plain)
    assert [r["density"] for r in control.rows] == pytest.approx([1.0, 0.8, 0.64], abs=0.01)


def test_layerwise_prunes_every_layer_by_the_fraction():
    model = models.build("resnet8", 8, seed=1)
    weights = {n: p.detach() for n, p in models.prunable(model).items()}
    masks = M.ones(model)
    for level in (1, 2):
        masks = magnitude.prune(weights, masks, 0.2, layerwise=True)
        for n, m in masks.items():
            assert abs(int(m.sum()) - m.numel() * 0.8**level) <= level
            kept, dropped = weights[n][m].abs(), weights[n][~m].abs()
            assert kept.min() >= dropped.max()


def test_dense_layers_stay_dense():
    model = models.build("resnet8", 8, seed=1)
    weights = {n: p.detach() for n, p in models.prunable(model).items()}
    masks = magnitude.prune(weights, M.ones(model), 0.2, dense=("fc.weight", "conv"))
    assert masks["fc.weight"].all() and masks["conv.weight"].all()
    others = [n for n in masks if n not in ("fc.weight", "conv.weight")]
    total = sum(masks[n].numel() for n in others)
    assert sum(int(masks[n].sum()) for n in others) == total - round(0.2 * total)


def test_interrupted_imp_resumes_to_the_same_result(trunk, tmp_path, monkeypatch):
    config, root, result = trunk
    real = loop.train_step
    calls = {"n": 0}

    def interrupted(state, iteration):
        calls["n"] += 1
        if calls["n"] == 60 + 40 + 25:  # trunk, level 1, then partway into level 2
            raise KeyboardInterrupt
        return real(state, iteration)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        imp.run(config, out=tmp_path / "run")
    monkeypatch.setattr(loop, "train_step", real)
    [again] = imp.run(config, out=tmp_path / "run")
    a = level_weights(result.branch, 3).tensors
    b = level_weights(again.branch, 3).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(result.branch / "results.csv"), pd.read_csv(again.branch / "results.csv"))
    manifest = json.loads((again.branch / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_replicates_report_mean_and_spread(tmp_path):
    config = tiny_config(data_dir=str(tmp_path / "cache"), levels=1, rewind_iter="20it", steps="40it",
                         replicates=2)
    results = imp.run(config, out=tmp_path / "reps")
    assert [r.trunk.name for r in results] == ["rep-00", "rep-01"]
    seeds = [json.loads((r.trunk / "manifest.json").read_text())["seeds"] for r in results]
    assert seeds == [{"model": 0, "order": 0, "aug": 0}, {"model": 1, "order": 1, "aug": 1}]
    summary = pd.read_csv(tmp_path / "reps" / "results.csv")
    accs = [[row["final_test_acc"] for row in r.rows] for r in results]
    assert summary.final_test_acc_mean.tolist() == pytest.approx(np.mean(accs, axis=0))
    assert summary.final_test_acc_std.tolist() == pytest.approx(np.std(accs, axis=0, ddof=1))
    assert summary.replicates.tolist() == [2, 2]


def test_rewind_point_sweep_trains_its_branches_together_and_resumes(trunk, tmp_path, monkeypatch):
    """`--rewind-iter 0,10 --parallel 2`: the two branches of a level share their end, so the k=10
    one joins the stacked model at iteration 10; each equals its sequential run up to rounding, and
    an interrupted sweep resumes from the latest step both hold (levels save on one grid, every 20)."""
    config, root, _ = trunk
    sweep = config.with_values(rewind_iter="0,10", levels=1)
    trunks = {}
    for name in ("sequential", "parallel", "interrupted"):
        trunks[name] = tmp_path / name
        shutil.copytree(root, trunks[name], ignore=shutil.ignore_patterns("branches"))
    seq = imp.run(sweep, from_=trunks["sequential"])
    stacked, real = [], replicas.train_step_replicas
    monkeypatch.setattr(replicas, "train_step_replicas", lambda r, its: stacked.append(list(its)) or real(r, its))
    par = imp.run(sweep.with_values(parallel=2), from_=trunks["parallel"])
    assert stacked[0] == [0] and stacked[9] == [9] and stacked[10] == [10, 10] and len(stacked) == 60
    assert [r.rows[1]["rewind_iter"] for r in par] == [0, 10]
    for a, b in zip(seq, par):
        assert [r["density"] for r in a.rows] == [r["density"] for r in b.rows]
        wa, wb = (level_weights(r.branch, 1, step=60).tensors["blocks.2.conv2.weight"] for r in (a, b))
        assert (wa - wb).norm() / wa.norm() < 0.005  # float rounding of grouped convolutions only
    start = level_weights(par[1].branch, 1, step=10).tensors  # the k=10 branch starts from the masked trunk at 10
    mask = M.load(par[1].branch / "level_01" / "mask.safetensors")
    at_k = runs.read(root).stage("trunk").load(10).tensors
    assert torch.equal(start["conv.weight"], at_k["conv.weight"] * mask["conv.weight"])
    table = pd.read_csv(trunks["parallel"] / "trunk" / "analysis" / "imp_results.csv")  # every branch, per level
    assert table[["rewind_iter", "level"]].values.tolist() == [[0, 0], [0, 1], [10, 0], [10, 1]]
    assert table.branch.str.startswith(("imp-k0-", "imp-k10-")).all()
    assert (trunks["parallel"] / "trunk" / "analysis" / "imp_results.png").stat().st_size > 10_000

    def interrupted(r, its):
        if its[0] == 50:
            raise KeyboardInterrupt
        return real(r, its)

    monkeypatch.setattr(replicas, "train_step_replicas", interrupted)
    with pytest.raises(KeyboardInterrupt):
        imp.run(sweep.with_values(parallel=2), from_=trunks["interrupted"])
    stacked.clear()
    monkeypatch.setattr(replicas, "train_step_replicas", lambda r, its: stacked.append(list(its)) or real(r, its))
    again = imp.run(sweep.with_values(parallel=2), from_=trunks["interrupted"])
    assert stacked[0] == [40, 40] and len(stacked) == 20  # both hold iteration 40 (saved every 20)
    for a, b in zip(par, again):
        wa, wb = level_weights(a.branch, 1, step=60).tensors, level_weights(b.branch, 1, step=60).tensors
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_reusing_a_trunk_refuses_settings_that_differ_from_its_own(trunk, capsys):
    """--from trains branches with the trunk's settings: a different one given would be silently
    ignored, so it is one line instead; the trunk's own values, or defaults, pass."""
    from conftest import run_cli

    config, root, _ = trunk
    with pytest.raises(UserError, match=r"lr 0\.2 \(the trunk's: 0\.05\); precision 'bf16' \(the trunk's: 'fp32'\)"):
        imp.run(config.with_values(precision="bf16", lr=0.2), from_=root)
    # On the command line, a value counts when given, even the default (the trunk trained at 0.05).
    code, _, err = run_cli(["imp", "--from", str(root), "--lr", "0.1", "--rewind-iter", "20", "--levels", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "lr 0.1 (the trunk's: 0.05)" in err and "Traceback" not in err
    # The trunk's own values (as its config file gives them), steps spelled otherwise, and what only
    # observes are no conflict: level 1 is read back.
    [again] = imp.run(config.with_values(levels=1, steps="60", lr_milestones="40", eval_every="10it"), from_=root)
    assert again.rows[1]["level"] == 1


def test_a_moved_dataset_is_the_trunks_dataset(tmp_path):
    for name, size in (("here", 100), ("there", 100), ("other", 99)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ds.tar.gz").write_bytes(b"x" * size)
    assert imp_trunk.same_dataset(str(tmp_path / "there" / "ds.tar.gz"), str(tmp_path / "here" / "ds.tar.gz"))
    assert not imp_trunk.same_dataset(str(tmp_path / "other" / "ds.tar.gz"), str(tmp_path / "here" / "ds.tar.gz"))
    # The recorded path is gone (the trunk came from another machine): the name decides.
    assert imp_trunk.same_dataset(str(tmp_path / "other" / "ds.tar.gz"), str(tmp_path / "gone" / "ds.tar.gz"))
    assert not imp_trunk.same_dataset(str(tmp_path / "other" / "ds.tar.gz"), str(tmp_path / "gone" / "cifar.tar.gz"))


def test_zero_levels_trains_the_trunk_only(tmp_path, capsys):
    from conftest import cli_args, run_cli

    code, out, err = run_cli(["imp", *cli_args(data_dir=str(tmp_path / "cache"), steps="20it", lr_milestones=""),
                              "--levels", "0", "--rewind-iter", "10", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "0      100.0%" in out and not (tmp_path / "run" / "trunk" / "analysis" / "imp_results.csv").exists()


@pytest.mark.slow  # about 17 s on 2 cores; stacked replicas equal separate ones in test_replicas
def test_parallel_replicates_match_sequential_ones(tmp_path, cache):
    base = tiny_config(data_dir=cache, replicates=2, steps="60it", lr_milestones="40it", eval_every="20it",
                       rewind_iter="20it", levels=1)
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

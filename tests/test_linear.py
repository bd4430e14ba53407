"""rewind linear: deep linear networks against their analytical solution, the pathways study's
critical-period shape at small scale, a sweep that grows without retraining, settings and inits.
Matrix completion: test_linear_completion.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import file_states, run_cli, run_ok
from rewind.linear import dynamics, networks
from rewind.linear.tasks import hierarchical_modes

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: a second thread only waits (CLI runs: --threads 1)


def assert_one_line_error(code, err, *fragments):
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rewind: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def simulate(depth: int, k: torch.Tensor, steps: int, lr: float, paths: int = 1, gate=None, width: int = 32):
    """Per-mode K of each pathway of a balanced aligned network trained by the batched chains: [steps+1, P, 8]."""
    modes = hierarchical_modes()
    layers = networks.balanced_aligned(modes.U, modes.V, k, depth, width, torch.Generator().manual_seed(depth))
    chains = networks.Chains([torch.stack([w] * paths) for w in layers])
    target = modes.Y.T
    history = []
    for t in range(steps + 1):
        acts = chains.forward()
        out = acts[-1]
        history.append(torch.einsum("jm,pij,im->pm", modes.U, out, modes.V).numpy())
        if t == steps:
            break
        residual = out.sum(0, keepdim=True) - target
        learn = torch.ones(paths, 1, 1, dtype=torch.float64)
        if gate and gate[0] <= t < gate[1]:
            learn[1] = 0.0
        chains.descend(acts, residual * learn, lr)
    return np.array(history)


K0 = torch.sort(0.01 * (1 + 0.1 * torch.randn(8, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64)), descending=True).values


def test_the_integrator_matches_the_closed_form_at_depth_2():
    S = hierarchical_modes().S.numpy()
    steps = np.arange(601)
    ode = dynamics.balanced_trajectories(S, K0.numpy()[None, None], 2, 0.01, list(steps), [None])[:, 0, 0]
    assert np.abs(ode - dynamics.saxe_solution(S, K0.numpy(), 0.01, steps)).max() < 1e-6


def test_chain_step_is_exact_gradient_descent():
    gen = torch.Generator().manual_seed(1)
    layers = [torch.randn(3, n, m, generator=gen, dtype=torch.float64) for n, m in ((7, 5), (6, 7), (4, 6))]
    target = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    params = [w.clone().requires_grad_() for w in layers]
    out = torch.eye(5, dtype=torch.float64)
    for p in params:
        out = out @ p.transpose(1, 2)
    (0.5 * (out - target).square().sum()).backward()
    chains = networks.Chains([w.clone() for w in layers])
    acts = chains.forward()
    chains.descend(acts, acts[-1] - target, 0.1)
    for w, p, new in zip(layers, params, chains.layers):
        torch.testing.assert_close(new, w - 0.1 * p.grad, rtol=0, atol=1e-12)


# Gradient descent is the Euler discretisation of the flow: at lr 0.01 it reaches S/2 up to 1.4% late
# (measured: 1.2% at depth 2, 1.4% at depths 3 and 4, for the strongest mode; less for the others).


@pytest.mark.parametrize("depth,tolerance", [(2, 0.02), (3, 0.025), (4, 0.025)])
def test_balanced_single_pathway_follows_the_analytical_curve(depth, tolerance):
    S = hierarchical_modes().S.numpy()
    steps = 700
    sim = simulate(depth, K0, steps, 0.01)[:, 0]
    k0 = K0.numpy()[None, None]
    ode = dynamics.balanced_trajectories(S, k0, depth, 0.01, list(range(steps + 1)), [None])[:, 0, 0]
    grid = np.arange(steps + 1)
    for m in range(8):
        t_sim, t_ode = dynamics.crossing(grid, sim[:, m], S[m] / 2), dynamics.crossing(grid, ode[:, m], S[m] / 2)
        assert abs(t_sim / t_ode - 1) < tolerance, (m, t_sim, t_ode)
    assert np.abs(sim[-1] - S).max() < 0.01 * S.max()  # all modes learned


@pytest.mark.parametrize("gate", [None, (0, 150)])
def test_two_pathways_follow_the_two_pathway_analytical_curve(gate):
    S = hierarchical_modes().S.numpy()
    steps, depth = 700, 3
    sim = simulate(depth, K0, steps, 0.01, paths=2, gate=gate)
    k0 = np.stack([K0.numpy()] * 2)[None]
    ode = dynamics.balanced_trajectories(S, k0, depth, 0.01, list(range(steps + 1)), [gate])[:, 0]
    grid = np.arange(steps + 1)
    for m in range(8):
        total_sim, total_ode = sim[:, :, m].sum(1), ode[:, :, m].sum(1)
        t_sim, t_ode = dynamics.crossing(grid, total_sim, S[m] / 2), dynamics.crossing(grid, total_ode, S[m] / 2)
        assert abs(t_sim / t_ode - 1) < 0.025, (m, t_sim, t_ode)
    assert np.abs(sim[-1] - ode[-1]).max() < 0.005 * S.max()  # each pathway's final share, mode by mode
    if gate is None:
        assert np.abs(sim[:, 0] - sim[:, 1]).max() < 1e-12  # alike pathways stay alike
    else:
        assert sim[-1, 1, 0] < 0.01 * S[0] and ode[-1, 1, 0] < 0.01 * S[0]  # the gated one never gets mode 1


@pytest.fixture(scope="module")
def dln(tmp_path_factory):
    """The paper's multi-pathway sweep (one seed), through the command of the issue, at the paper's width
    100 (the authors' draw takes the modes' k from `width` values)."""
    out = tmp_path_factory.mktemp("linear") / "dln"
    run_ok(["linear", "pathways", "--depth", "2,3,4", "--deficit-start", "0,400,750", "--deficit-length", "150",
         "--threads", "1", "--progress", "none", "--no-figures", "--out", str(out)])
    return out


def test_pathways_critical_period_shape(dln):
    r = pd.read_csv(dln / "results.csv")
    assert {"depth", "deficit_start", "deficit_length", "seed", "mode", "target", "k_a", "k_b"} <= set(r.columns)
    free = r[r.deficit_start.isna()]
    assert len(free) == 3 * 8 and ((free.k_a - free.k_b).abs() < 1e-6 * free.target).all()  # no deficit: shared equally
    assert (r.loss < 1e-6).all()  # every arm learns the task
    share = pd.read_csv(dln / "summary.csv").set_index(["depth", "deficit_start"]).gated_share
    for depth in (2, 3, 4):
        early = r[(r.depth == depth) & (r.deficit_start == 0)]
        assert (early[early["mode"] <= 2].share_b < 0.01).all()  # the strong modes all go to pathway a
        late = r[(r.depth == depth) & (r.deficit_start == 750)]
        assert (late.share_b - 0.5).abs().max() < 0.001  # a late deficit changes almost nothing
    # a middle deficit (400-550) costs nothing at depth 2 and more with every layer: the authors' code
    # (re-implemented with autograd, seed 0) leaves the gated pathway 0.49847, 0.47625 and 0.42013
    assert share[2, 400] > 0.49 and share[3, 400] < share[2, 400] - 0.02 and share[4, 400] < share[3, 400] - 0.04
    assert abs(share[2, 400] - 0.49847) < 1e-4 and abs(share[3, 400] - 0.47625) < 1e-4
    assert abs(share[4, 400] - 0.42013) < 1e-4
    assert (r[["k_a", "k_b"]].to_numpy() - r[["k_a_ode", "k_b_ode"]].to_numpy()).max() < 0.005 * r.target.max()


def test_pathways_outputs(dln):
    curves = pd.read_csv(dln / "curves.csv")
    arm = curves[(curves.depth == 4) & (curves.deficit_start == 0) & (curves["mode"] == 1)]
    assert arm.step.tolist() == list(range(0, 1001, 10))  # trunk before the onset, branch after
    assert abs(arm.k_b.iloc[-1] - arm.k_b_ode.iloc[-1]) < 1e-3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    branch = next((dln / "depth4-seed0" / "branches").glob("gate-400-*")) / "train"
    acc = EventAccumulator(str(branch))
    acc.Reload()
    k_b = acc.Scalars("linear/k_b_5")
    assert k_b[0].step == 400 and k_b[-1].step == 1000 and "linear/loss" in acc.Tags()["scalars"]


def test_runs_list_and_show_read_linear_archives(dln, capsys):
    code, out, _ = run_cli(["runs", "list", str(dln)], capsys)
    assert code == 0 and out.count("linear-pathways") == 3 and "1000/1000" in out
    code, out, _ = run_cli(["runs", "show", str(dln / "depth3-seed0")], capsys)
    assert code == 0 and "checkpoints (4): 0, 400, 750, 1000" in out and "[pathways]" in out


def test_a_new_onset_trains_only_its_branch(dln, tmp_path, capsys):
    out = tmp_path / "dln"
    shutil.copytree(dln, out)
    root = out / "depth2-seed0"
    before = file_states(root)
    code, stdout, err = run_cli(["linear", "pathways", "--depth", "2", "--deficit-start", "0,200,400,750",
                                 "--threads", "1", "--progress", "none", "--out", str(out)], capsys)
    assert code == 0, err
    assert "gated share" in stdout and (out / "pathways_singular_values.png").stat().st_size > 10_000
    assert (out / "pathways_share.png").stat().st_size > 10_000
    after = file_states(root)
    changed = {k for k in before if after[k] != before[k]}
    added = set(after) - set(before)
    assert all(not k.startswith("branches/") for k in changed)  # old branches untouched
    assert all(k.startswith("branches/gate-200-") or k.startswith("trunk/checkpoints/it00000200.") or
               k.startswith("trunk/events") for k in added), added
    assert changed <= {"manifest.json"}  # the trunk's checkpoints and metrics as they were, one more recorded
    # the new trunk checkpoint is where the trunk was at step 200 when it first went by (its metrics row)
    from rewind.archive import run as runs
    from rewind.linear import pathways
    from rewind.linear.config import load_pathways

    c = load_pathways(None, {"depth": "2"}).pathways
    weights = runs.read(root).stage("trunk").load(200).tensors
    k = pathways.PathwaysBatch([weights], [None], [0], hierarchical_modes(), c, torch.device("cpu")).record()
    row = pd.read_csv(root / "trunk" / "metrics.csv").set_index("step").loc[200]
    assert k[0, 1:9].tolist() == row[[f"k_a_{m}" for m in range(1, 9)]].tolist()


@pytest.mark.parametrize("args,fragments", [
    (["pathways", "--depth", "0,2"], ["depth must list depths of at least 1"]),
    (["pathways", "--deficit-start", "900"], ["deficit window 900-1050 ends after the run's 1000 steps"]),
    (["pathways", "--lr", "0"], ["lr must be positive"]),
    (["pathways", "--steps", "0"], ["steps must be at least 1"]),
    (["pathways", "--pathways", "1"], ["needs at least 2 pathways"]),
    (["completion", "--task1-rank", "101"], ["task1_rank 101 is above N = 100"]),
    (["completion", "--observations", "10001"], ["more than the 10000 entries"]),
    (["completion", "--subset-observations", "2000"], ["must be below observations 2000"]),
    (["completion", "--pretrain-steps", "0,1x"], ["bad pretrain_steps '0,1x'", "1k = 1000"]),
    (["completion", "--task2-steps", "-5"], ["task2_steps must be at least 1"]),
    (["completion", "--init-scale", "-1e-3"], ["init_scale must be positive"]),
    (["completion", "--pretrain-steps", "1k,5k", "--relative"], ["--relative plots error(T_c = 0)", "add 0"]),
    (["completion", "--pretrain-steps", "1k,5k", "--relative", "--dry-run"], ["--relative plots", "add 0"]),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, fragments):
    code, _, err = run_cli(["linear", *args, "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()


def test_unknown_toml_key_is_one_line(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("[pathways]\ndeficit_lenght = 100\n")
    code, _, err = run_cli(["linear", "pathways", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")],
                           capsys)
    assert_one_line_error(code, err, "unknown config key 'pathways.deficit_lenght'", "did you mean")


def test_shipped_configs_hold_the_paper_settings():
    from rewind.linear.config import load_completion, load_pathways

    p = load_pathways(str(REPO / "configs" / "linear_pathways.toml")).pathways
    assert (p.depth, p.deficit_start, p.deficit_length, p.steps, p.lr, p.width, p.init_scale, p.seeds) == (
        "2,3,4", "0,400,750", 150, 1000, 0.01, 100, 0.01, "0,1,2")
    assert (p.init, p.init_noise, p.init_draw) == ("balanced", 0.1, "width")  # the authors' draw
    c = load_completion(str(REPO / "configs" / "linear_completion.toml")).completion
    assert (c.size, c.task2_rank, c.lr, c.task2_steps, c.seeds, c.init, c.timing) == (
        100, 5, 0.2, 30000, "0,1,2", "gaussian", "paper")
    assert c.axes() == ([10], [2000], [0], [1e-3])  # task 1's rank, observed entries, no subset, init scale
    from rewind.linear.config import counts

    assert counts(c.pretrain_steps, "pretrain_steps", allow_k=True) == [0, 1000, 5000, 10000, 20000, 40000, 60000,
                                                                        80000, 100000]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["linear", "pathways", "--device", "cuda", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "--device cuda", "no CUDA device")
    assert not (tmp_path / "r").exists()


def test_inits_are_balanced_and_aligned_or_of_the_stated_scale():
    from rewind.linear import pathways
    from rewind.linear.config import load_pathways

    modes = hierarchical_modes()
    c = load_pathways(None, {}).pathways
    layers = [w[0].double() for w in pathways.initial_weights(c, 4, 0, modes).values()]
    for below, above in zip(layers, layers[1:]):
        torch.testing.assert_close(above.T @ above, below @ below.T, rtol=0, atol=1e-8)  # balanced
    end = layers[3] @ layers[2] @ layers[1] @ layers[0]
    k = pathways.initial_k(c, 0).double()
    torch.testing.assert_close(modes.U.T @ end @ modes.V, torch.diag(k), rtol=0, atol=1e-8)  # aligned: U diag(k) V^T
    g = load_pathways(None, {"init": "gaussian"}).pathways
    w = {name: v.double() for name, v in pathways.initial_weights(g, 3, 0, modes).items()}
    ends = [w["layer2"][p] @ w["layer1"][p] @ w["layer0"][p] for p in range(2)]
    assert 0.7 * g.init_scale < ends[0].std() < 1.3 * g.init_scale and not torch.equal(ends[0], ends[1])


def test_the_balanced_init_draws_the_authors_values_for_a_seed():
    """k of the 8 modes: the largest 8 of `width` values 0.01 * (1 + 0.1 * N(0,1)), from torch's generator
    seeded with the seed: what the authors' script draws for that seed (its lines, run here)."""
    from rewind.linear import pathways
    from rewind.linear.config import load_pathways

    for seed in (0, 2):
        with torch.random.fork_rng(devices=[]):  # multipath/analytical_and_sgd_final.py, width 100
            torch.manual_seed(seed)
            diag_values = (torch.randn(100, ) * 0.1 + torch.ones(100, )) * 0.01
            authors = torch.sort(diag_values, descending=True).values[:8].double()
        k = pathways.initial_k(load_pathways(None, {}).pathways, seed)
        torch.testing.assert_close(k, authors, rtol=1e-6, atol=0)
    k0 = pathways.initial_k(load_pathways(None, {}).pathways, 0)
    assert k0.tolist() == pytest.approx([0.0134105, 0.0125672, 0.0123022, 0.0118530, 0.0118197, 0.0115863,
                                         0.0115210, 0.0113894], abs=1e-7)
    # the former draw (one value per mode): up to 17% lower; its runs keep the identity they had
    before = load_pathways(None, {"init_draw": "modes"}).pathways
    assert pathways.initial_k(before, 0).tolist() == pytest.approx(
        [0.0112882, 0.0112427, 0.0111510, 0.0100240, 0.0096412, 0.0095378, 0.0094698, 0.0094598], abs=1e-7)
    from rewind.archive.run import identity_hash

    shipped = load_pathways(str(REPO / "configs" / "linear_pathways.toml"), {"init_draw": "modes"}).pathways
    assert identity_hash(pathways.trunk_identity(shipped, 4, 1))[:12] == "a74bd23e49cb"  # its archives resume
    assert pathways.trunk_identity(load_pathways(None, {}).pathways, 4, 0)["init_draw"] == "width"

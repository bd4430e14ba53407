"""The deep-linear variants `rewind reproduce` uses: the analytical phase portraits, nonlinear and
lesioned pathways with the authors' init, matrix completion's init kinds, swept settings, the
authors' switch timing and the analytical flow of the end-to-end map. Each against the authors'
computation (their loops, a few lines each, written out here) or an exact identity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli, run_ok
from rewind.linear import flow, networks, phase


def authors_phase(D, S, p0, window, dt, T, c):
    """multipath/phase-*-init.py's k_trajectory (their loop; c = 1 large init, 0 small)."""
    p = np.zeros((T, 2))
    K = np.zeros((T, 2))
    p[0] = p0
    K[0] = p[0] * np.power(p[0] ** 2 + c, (D - 1) / 2)
    for t in range(1, T):
        omega = S - K[t - 1].sum()
        p[t, 0] = p[t - 1, 0] + dt * np.sqrt(p[t - 1, 0] ** 2 + c) ** (D - 1) * omega
        held = window[0] <= t < window[1]
        p[t, 1] = p[t - 1, 1] if held else p[t - 1, 1] + dt * np.sqrt(p[t - 1, 1] ** 2 + c) ** (D - 1) * omega
        K[t] = p[t] * np.power(p[t] ** 2 + c, (D - 1) / 2)
    return K


def test_phase_trajectories_are_the_authors_euler_map():
    """Their states are numbered from 1, so their window (s, e) is updates [s - 1, e - 1) here; at rest the
    small-init systems are carried over whole stretches, and still give their numbers."""
    rng = np.random.default_rng(0)
    p0 = rng.normal(0, 0.01, (6, 2))
    for D in (2, 5, 13):
        ours = phase.trajectories(p0, np.full(6, D), 10.0, phase.LARGE, 0.001, 299, np.tile([-1, 14], (6, 1)))
        for i in range(6):
            assert np.abs(ours[:, i] - authors_phase(D, 10.0, p0[i], (0, 15), 0.001, 300, 1.0)).max() < 1e-12
    windows = np.array([[0, 5], [3000, 3100], [-1, 4]])
    ours = phase.trajectories(np.full((3, 2), 0.05), np.array([2, 3, 4]), 10.0, phase.SMALL, 0.01, 5999, windows)
    for i, (D, window) in enumerate(zip((2, 3, 4), ((1, 6), (3001, 3101), (0, 5)))):
        assert np.abs(ours[:, i] - authors_phase(D, 10.0, (0.05, 0.05), window, 0.01, 6000, 0.0)).max() < 1e-12
    sparse = phase.trajectories(np.full((3, 2), 0.05), np.array([2, 3, 4]), 10.0, phase.SMALL, 0.01, 5999, windows,
                                every=7)
    assert np.array_equal(sparse, ours[[*range(0, 5999, 7), 5999]])  # every 7th state, and the last


def test_phase_flow_field_is_the_rate_of_K():
    K = np.array([[0.5, 2.0], [3.0, 6.0]])
    for c, D in ((phase.SMALL, 3), (phase.LARGE, 8)):
        p = phase.p_of_k(K, D, c)
        assert np.allclose(phase.k_of_p(p, D, c), K, rtol=1e-12)
        dka, _ = phase.flow_field(K, K, D, 10.0, c)
        h = 1e-7  # dK/dt = dK/dp * dp/dt, dp/dt = (p^2 + c)^((D-1)/2) (S - K_a - K_b)
        dp = np.power(p * p + c, (D - 1) / 2) * (10.0 - 2 * K)
        numeric = (phase.k_of_p(p + h * dp, D, c) - phase.k_of_p(p, D, c)) / h
        assert np.allclose(dka, numeric, rtol=1e-5)


@pytest.mark.parametrize("nonlinearity", ["none", "tanh", "relu"])
def test_chains_descend_is_the_autograd_gradient_step(nonlinearity):
    gen = torch.Generator().manual_seed(0)
    layers = networks.gaussian([8, 16, 16, 15], 0.4, gen)
    target = torch.randn(8, 15, generator=gen, dtype=torch.float64)
    chains = networks.Chains([w[None].clone() for w in layers], nonlinearity)
    acts = chains.forward()
    chains.descend(acts, acts[-1] - target, 0.1)
    params = [w.clone().requires_grad_() for w in layers]
    h = torch.eye(8, dtype=torch.float64)
    act = {"none": lambda x: x, "tanh": torch.tanh, "relu": torch.relu}[nonlinearity]
    for w in params:
        h = act(h @ w.T)
    (0.5 * (h - target).square().sum()).backward()
    for mine, w in zip(chains.layers, params):
        torch.testing.assert_close(mine[0], w.detach() - 0.1 * w.grad, rtol=0, atol=1e-12)


def test_hidden_init_full_is_the_authors_multipathwaynet():
    """Their layers (multichannel_net_diag.py: one orthogonal basis drawn after k, their SVD's vectors), and
    for a linear network the same K as rewind's own init."""
    from rewind.linear import pathways
    from rewind.linear.config import load_pathways
    from rewind.linear.tasks import authors_modes, hierarchical_modes

    c = load_pathways(None, {"hidden_init": "full", "depth": "3"}).pathways
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        k = torch.sort((torch.randn(100) * 0.1 + torch.ones(100)) * 0.01, descending=True).values
        torch.nn.init.orthogonal_(torch.empty(100, 8))
        R = torch.nn.init.orthogonal_(torch.empty(100, 100))
    U, _, V = torch.svd(hierarchical_modes().Y.float() / 8, some=False)
    d = torch.diag(k ** (1 / 3))
    theirs = [R @ d[:, :8] @ V.T, R @ d @ R.T, U[:, :8] @ d[:8, :] @ R.T]
    mine = pathways.initial_weights(c, 3, 0, authors_modes())
    for l, w in enumerate(theirs):
        torch.testing.assert_close(mine[f"layer{l}"][1], w, rtol=0, atol=1e-6)
    own = load_pathways(None, {"depth": "3"}).pathways
    runs = []
    for conf, modes in ((c, authors_modes()), (own, hierarchical_modes())):
        batch = pathways.PathwaysBatch([pathways.initial_weights(conf, 3, 0, modes)], [(0, 150)], [600], modes, conf,
                                       torch.device("cpu"))
        for tau in range(600):
            batch.step(tau)
        runs.append(batch.record())
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=2e-6)  # every K and the loss


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """Seed 0, depth 3, as the authors' configs: the lesion (gated 0-200, mode 2 lost), tanh and ReLU pathways."""
    root = tmp_path_factory.mktemp("variants")
    base = ["linear", "pathways", "--depth", "3", "--hidden-init", "full", "--threads", "1", "--progress", "none",
            "--no-figures"]
    for name, extra in (("lesion", ["--deficit-start", "0", "--deficit-length", "200", "--lesion-mode", "2"]),
                        ("tanh", ["--deficit-start", "0", "--nonlinearity", "tanh"]),
                        ("relu", ["--deficit-start", "0", "--nonlinearity", "relu"])):
        run_ok([*base, *extra, "--out", str(root / name)])
    return root


def _gated(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.deficit_start == 0].set_index("mode")


def test_the_lesioned_mode_goes_to_the_gated_pathway(variants):
    """Pathway a never learns the lost mode; pathway b learns all of it once the gate lifts, as the
    analytical curve says (no competitor), while the modes a learned during the gate stay a's. The
    authors' gate_sing run (re-implemented, seed 0) leaves b 0.2036202 of sum K."""
    r = _gated(pd.read_csv(variants / "lesion" / "results.csv"))
    assert r.k_a[2] < 0.02 and r.share_b[2] > 0.99 and (r.share_b[[1, 3, 4]] < 0.01).all()
    assert abs(r.k_b[2] - r.k_b_ode[2]) < 0.005 * r.target[2]
    assert abs(r.k_b.sum() / (r.k_a.sum() + r.k_b.sum()) - 0.2036202) < 1e-6
    curves = pd.read_csv(variants / "lesion" / "curves.csv")
    lost = curves[(curves.deficit_start == 0) & (curves["mode"] == 2)]
    assert lost.k_a.max() - lost.k_a.min() < 1e-6  # pathway a: the lost mode gets no gradient at all


@pytest.mark.parametrize("kind,share", [("tanh", 0.0882831), ("relu", 0.0084268)])
def test_nonlinear_pathways_match_the_authors_first_arm(variants, kind, share):
    """The authors' nonlin_sgd_rebuttal_iclr.py (re-implemented, seed 0), its early-deficit arm (their later
    arms draw another hidden basis each): pathway b's share of sum K; no analytical curve."""
    r = _gated(pd.read_csv(variants / kind / "results.csv"))
    assert abs(r.k_b.sum() / (r.k_a.sum() + r.k_b.sum()) - share) < 1e-6
    assert r.k_a_ode.isna().all()


COMPLETION = ["--size", "20", "--task1-rank", "3", "--task2-rank", "2", "--observations", "160", "--lr", "0.5",
              "--task2-steps", "300", "--pretrain-steps", "0,200", "--record-every", "50", "--threads", "1",
              "--progress", "none", "--no-figures"]


def test_completion_inits_are_the_authors():
    from rewind.linear import completion
    from rewind.linear.config import load_completion

    for init in ("gaussian", "orthogonal", "identity"):
        c = load_completion(None, {"init": init, "size": 50, "init_scale": "0.001"}).completion
        layers = [w.double() for w in completion.initial_weights(c, completion.variants(c)[0], 3, 0).values()]
        end = completion.end_to_end({f"layer{l}": w for l, w in enumerate(layers)})
        if init == "orthogonal":  # each orthogonal times (scale sqrt(N))^(1/D): balanced, e2e norm scale * N
            for w in layers:
                torch.testing.assert_close(w.T @ w, torch.eye(50, dtype=torch.float64) * (0.001 * 50 ** 0.5) ** (2 / 3),
                                           rtol=1e-5, atol=1e-9)
            assert abs(torch.linalg.matrix_norm(end) / (0.001 * 50) - 1) < 1e-5
        elif init == "identity":
            torch.testing.assert_close(end, torch.eye(50, dtype=torch.float64) * 0.001, rtol=1e-5, atol=0)
        else:  # their assertion: the e2e Frobenius norm within 20% of scale * sqrt(N)
            assert 0.8 < torch.linalg.matrix_norm(end) / (0.001 * 50 ** 0.5) < 1.2


def test_the_code_timing_is_the_authors_loop(tmp_path, capsys):
    """--timing code: task 1 for T_c + 1 steps, task 2 for task2_steps - 1, the error read before the last
    step, as matrixcompletion/main.py's loop (autograd, SGD) on the same data and init."""
    from rewind.linear import completion
    from rewind.linear.config import load_completion

    code, _, err = run_cli(["linear", "completion", *COMPLETION, "--depth", "2", "--timing", "code",
                            "--out", str(tmp_path / "mc")], capsys)
    assert code == 0, err
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "mc" / "depth2-seed0" / "branches").iterdir()) == \
        ["1", "201"]
    got = pd.read_csv(tmp_path / "mc" / "results.csv").set_index("pretrain_steps").task2_error
    c = load_completion(None, {"size": 20, "task1_rank": "3", "task2_rank": 2, "observations": "160"}).completion
    tasks = completion.all_tasks(c, [0])[0, completion.variants(c)[0]]
    for T_c in (0, 200):
        layers = [w.double().clone().requires_grad_() for w in completion.initial_weights(
            c, completion.variants(c)[0], 2, 0).values()]
        opt = torch.optim.SGD(layers, lr=0.5)
        for T in range(T_c + 300):
            e2e = layers[0].T @ layers[1].T  # H = (W_2 W_1)^T
            target, mask = (tasks.target2, tasks.mask2) if T > T_c else (tasks.target1, tasks.mask1)
            loss = 0.5 * ((e2e - target).square() * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            error = (e2e.detach() - tasks.target2).square().mean()  # read before the step, as theirs
            opt.step()
        assert abs(got[T_c] - float(error)) < 1e-5 * max(float(error), 1e-3)


def test_the_flow_velocity_is_the_balanced_layers_own():
    """dW/dt of the end-to-end map under gradient flow on balanced layers (their product rule, autograd)
    equals flow.velocity: Arora et al.'s end-to-end dynamics, in the singular basis."""
    gen = torch.Generator().manual_seed(1)
    n, D = 12, 3
    bases = [networks.orthonormal_columns(n, n, gen) for _ in range(D + 1)]
    s = torch.linspace(0.3, 2.0, n, dtype=torch.float64)
    layers = [bases[l + 1] @ torch.diag(s ** (1 / D)) @ bases[l].T for l in range(D)]  # balanced
    W = layers[2] @ layers[1] @ layers[0]
    G = torch.randn(n, n, generator=gen, dtype=torch.float64)
    params = [w.clone().requires_grad_() for w in layers]
    (params[2] @ params[1] @ params[0] * G).sum().backward()  # dL/dW_j for a loss with dL/dW = G
    grads = [p.grad for p in params]
    rate = -(grads[2] @ layers[1] @ layers[0] + layers[2] @ grads[1] @ layers[0] + layers[2] @ layers[1] @ grads[0])
    torch.testing.assert_close(flow.velocity(W, G, D), rate, rtol=0, atol=1e-10)
    torch.testing.assert_close(flow.velocity(W, G, 1), -G, rtol=0, atol=0)


def test_swept_settings_are_arms_and_a_new_value_trains_only_its_own(tmp_path, capsys):
    """--task1-rank 1,3 after --task1-rank 3: the rank-3 archive (made under its old name) is used as is,
    only rank 1 trains, and both are arms of one batched program; results equal those of a fresh sweep.
    A CPU batch cut into pieces (one arm each) computes the same bits."""
    from rewind.linear import sweep

    out = tmp_path / "mc"
    args = ["linear", "completion", *COMPLETION, "--depth", "3", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 0
    before = {p: p.read_bytes() for p in (out / "depth3-seed0").rglob("*.safetensors")}
    code, stdout, err = run_cli([*args, "--task1-rank", "1,3"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("depth")) == ["depth3-rank1-seed0",
                                                                                   "depth3-seed0"]
    assert all(p.read_bytes() == b for p, b in before.items())
    assert "D=3-rank1" in stdout and "D=3-rank3" in stdout
    old, sweep.CPU_BATCH_BYTES = sweep.CPU_BATCH_BYTES, 1
    try:
        assert run_cli(["linear", "completion", *COMPLETION, "--depth", "3", "--task1-rank", "1,3",
                        "--out", str(tmp_path / "fresh")], capsys)[0] == 0
    finally:
        sweep.CPU_BATCH_BYTES = old
    fresh = pd.read_csv(tmp_path / "fresh" / "results.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), fresh)
    assert sorted(fresh.task1_rank.unique()) == [1, 3]

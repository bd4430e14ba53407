"""rewind linear completion: the critical-period shape of matrix completion at small scale, exact
resume after kill -9, a sweep that grows without retraining, the summary over seeds, the tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import file_states, run_cli, run_ok, same_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matrices: a second thread only waits (CLI runs: --threads 1)

# Completion at small scale: 40 x 40, task 1 rank 4 and task 2 rank 2 on 320 entries (20%, as in the
# paper), lr 0.5 so that task 1's singular values are learned within ~2k steps at depth 3.
COMPLETION = ["--depth", "1,3", "--size", "40", "--task1-rank", "4", "--task2-rank", "2", "--observations", "320",
              "--task2-steps", "2500", "--lr", "0.5", "--record-every", "250", "--save-every", "500",
              "--threads", "1", "--progress", "none", "--no-figures"]


@pytest.fixture(scope="module")
def mc(tmp_path_factory):
    """A matrix-completion sweep at small scale, in one go."""
    out = tmp_path_factory.mktemp("linear") / "mc"
    run_ok(["linear", "completion", *COMPLETION, "--pretrain-steps", "0,1k,2k,3k", "--out", str(out)])
    return out


def test_completion_critical_period_shape(mc):
    r = pd.read_csv(mc / "results.csv").set_index(["depth", "pretrain_steps"])
    assert {"seed", "task2_error"} <= set(r.columns)
    shallow = r.loc[1].task2_error
    assert shallow.max() / shallow.min() - 1 < 1e-3  # depth 1: T_c changes nothing
    deep = r.loc[3].task2_error
    curves = pd.read_csv(mc / "curves.csv")
    trunk = curves[(curves.depth == 3) & (curves.pretrain_steps == 3000) & (curves.task == 1)].set_index("step")
    learned = trunk.sv_3 > 0.5 * trunk.sv_3.iloc[-1]  # task 1's top singular values are in place
    point = trunk.index[learned.to_numpy().argmax()]
    assert 1000 < point <= 2000
    assert deep[0] < 0.05  # from the init, task 2 (rank 2) is completed
    assert (deep[deep.index >= point] > 20 * deep[0]).all()  # after task 1 is learned, it no longer is
    assert deep[2000] > 3 * deep[1000]  # and the switch after it costs more than one during it


def test_completion_resumes_after_kill_9_with_identical_results(mc, tmp_path, capsys, monkeypatch):
    out = tmp_path / "mc"
    args = ["linear", "completion", *COMPLETION, "--pretrain-steps", "0,1k,2k,3k", "--out", str(out)]
    # kill -9 of a process in the middle of the depth-3 trunk, just after its checkpoint 1500
    script = ("import os, signal, sys\n"
              "from rewind.archive.stage import Stage\n"
              "save = Stage.save\n"
              "def dying(self, step, *a, **k):\n"
              "    save(self, step, *a, **k)\n"
              "    if 'depth3' in str(self.dir) and self.rel == 'trunk' and step == 1500:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "Stage.save = dying\n"
              "from rewind.cli import main\n"
              f"sys.argv = ['rewind', *{args!r}]\n"
              "main()\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    held = json.loads((out / "depth3-seed0" / "manifest.json").read_text())["files"]
    assert "trunk/checkpoints/it00001500.safetensors" in held and "trunk/checkpoints/it00002000.safetensors" not in held
    # then an interruption in the branches (Ctrl-C after step 1000 of the T_c = 0 branch of depth 1)
    from rewind.archive.stage import Stage

    save = Stage.save

    def interrupted(self, step, *a, **k):
        save(self, step, *a, **k)
        if self.rel == "train" and step == 1000:
            raise KeyboardInterrupt

    monkeypatch.setattr(Stage, "save", interrupted)
    assert run_cli(args, capsys)[0] == 130
    monkeypatch.setattr(Stage, "save", save)
    assert json.loads((out / "depth3-seed0" / "manifest.json").read_text())["status"] == "complete"  # trunk done
    assert not (out / "results.csv").exists()
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert (out / "results.csv").read_text() == (mc / "results.csv").read_text()
    assert (out / "curves.csv").read_text() == (mc / "curves.csv").read_text()
    assert (out / "depth3-seed0/trunk/metrics.csv").read_text() == (mc / "depth3-seed0/trunk/metrics.csv").read_text()
    for trunk in ("depth1-seed0", "depth3-seed0"):
        for point in (0, 1000, 2000, 3000):
            branch = next((out / trunk / "branches").glob(f"task2-{point}-*")).relative_to(out)
            final = f"{branch}/train/checkpoints/it{point + 2500:08d}.safetensors"
            assert same_checkpoint(out / final, mc / final)


def test_a_new_pretrain_point_trains_only_its_branch_and_matches_a_sweep_that_had_it(mc, tmp_path, capsys):
    out = tmp_path / "mc"
    base = ["linear", "completion", *COMPLETION, "--save-every", "0", "--out", str(out)]  # points only
    assert run_cli(base + ["--pretrain-steps", "0,2k,3k"], capsys)[0] == 0
    before = file_states(out)
    code, stdout, err = run_cli(base + ["--pretrain-steps", "0,1k,2k,3k"], capsys)
    assert code == 0, err
    after = file_states(out)
    new_branches = {k.split("/")[2] for k in set(after) - set(before) if "/branches/" in k}
    assert sorted(new_branches) == sorted(p.name for p in out.glob("depth*-seed0/branches/task2-1000-*"))
    assert len(new_branches) == 2  # one per depth
    for k, v in before.items():
        if "/branches/" in k or "/trunk/checkpoints/" in k:
            assert after[k] == v, k  # old branches and trunk checkpoints untouched
    assert (out / "results.csv").read_text() == (mc / "results.csv").read_text()
    rel = "depth3-seed0/trunk/checkpoints/it00001000.safetensors"
    assert same_checkpoint(out / rel, mc / rel)  # bit for bit what saving it the first time wrote
    assert "T_c" in stdout and "D=3" in stdout


def test_completion_summary_is_the_mean_and_spread_over_seeds():
    from rewind.linear.completion import summarize, with_relative_error

    errors = {(3, 0): [0.0001, 0.0003, 0.0002], (3, 20000): [0.2, 0.7, 0.45], (1, 0): [0.79, 0.80, 0.81],
              (1, 20000): [0.79, 0.80, 0.81]}
    results = pd.DataFrame([{"depth": d, "pretrain_steps": t, "seed": seed, "task2_error": e, "task1_error": 1.0}
                            for (d, t), es in errors.items() for seed, e in enumerate(es)])
    s = summarize(with_relative_error(results)).set_index(["depth", "pretrain_steps"])
    row = s.loc[3, 20000]
    assert row.task2_error == pytest.approx(0.45) and row.task2_error_std == pytest.approx(0.25)  # ddof 1
    assert (row.task2_error_min, row.task2_error_max, row.seeds) == (0.2, 0.7, 3)
    # the authors' quantity per seed, error(T_c = 0) - error(T_c), then over seeds
    assert row.relative_error == pytest.approx(-0.4498) and row.relative_error_std == pytest.approx(0.2499)
    assert s.loc[1, 20000].relative_error == 0 and s.loc[3, 0].relative_error == 0
    no_zero = with_relative_error(results[results.pretrain_steps > 0])
    assert no_zero.relative_error.isna().all()


def test_completion_over_three_seeds_reports_their_mean_and_spread(tmp_path, capsys):
    out = tmp_path / "mc3"
    args = [a for a in COMPLETION if a != "--no-figures"]
    code, stdout, err = run_cli(["linear", "completion", *args, "--depth", "3", "--pretrain-steps", "0,2k",
                                 "--seeds", "0,1,2", "--relative", "--out", str(out)], capsys)
    assert code == 0, err
    from rewind.linear.completion import summarize

    results = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(summary, summarize(results))  # the table's rows are the seeds' statistics
    late = summary.set_index("pretrain_steps").loc[2000]
    errors = results[results.pretrain_steps == 2000].task2_error
    assert late.seeds == 3 and errors.nunique() == 3  # three different draws
    assert late.task2_error == pytest.approx(errors.mean()) and late.task2_error_std == pytest.approx(errors.std())
    assert (results[results.pretrain_steps == 2000].relative_error < -0.3).all()  # task 1 first hurts every seed
    assert f"{late.task2_error:.4f} ± {late.task2_error_std:.4f}" in stdout and "over 3 seeds" in stdout
    assert (out / "completion_error.png").stat().st_size > 10_000


def test_completion_tasks_and_the_subset_variant():
    from rewind.linear.tasks import completion_tasks

    t = completion_tasks(50, 4, 2, 600, 0, seed=3)
    assert t.mask1.sum() == t.mask2.sum() == 600 and torch.equal(t.mask1, t.mask2)  # the same entries
    for target, rank in ((t.target1, 4), (t.target2, 2)):
        assert abs(torch.linalg.matrix_norm(target) - 50) < 1e-9  # ||M||_F = N
        assert torch.linalg.matrix_rank(target) == rank
    s = completion_tasks(50, 4, 2, 600, 250, seed=3)
    assert torch.equal(s.target1, s.target2) and torch.equal(s.target2, t.target2)  # task 2's own matrix
    assert s.mask1.sum() == 250 and bool((s.mask1 <= s.mask2).all())  # on part of its entries


def test_a_swept_sweep_plans_again_over_its_own_archives(tmp_path, capsys):
    """A sweep over task 1's rank keeps one trunk per rank; planning it again (--dry-run, an executor)
    checks each against its own archive, not every rank against the defaults' one."""
    args = ["linear", "completion", "--depth", "1", "--size", "20", "--task1-rank", "2,10", "--task2-rank", "2",
            "--observations", "120", "--pretrain-steps", "0,100", "--task2-steps", "100", "--record-every", "50",
            "--save-every", "50", "--threads", "1", "--progress", "none", "--no-figures", "--out", str(tmp_path)]
    assert run_cli(args, capsys)[0] == 0
    assert {p.name for p in tmp_path.glob("depth1-*")} == {"depth1-rank2-seed0", "depth1-seed0"}
    code, out, err = run_cli([*args, "--dry-run"], capsys)
    assert code == 0 and "Traceback" not in err, err

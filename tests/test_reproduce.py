"""`rewind reproduce kleinman2024 --scale smoke`: every figure made in one command, each CSV showing the
paper's shape; re-running trains nothing, a new seed trains only its arms, --dry-run lists every run;
bad input is one line."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import run_cli, run_ok

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "k24"
    run_ok(["reproduce", "kleinman2024", "--threads", "1", "--progress", "none", "--out", str(out)])
    return out


def csv(smoke, name: str) -> pd.DataFrame:
    return pd.read_csv(smoke / f"{name}.csv")


def test_every_figure_is_drawn_with_its_table_and_readme(smoke):
    from rewind.reproduce.kleinman2024 import FIGURES

    readme = (smoke / "README.md").read_text()
    for f in FIGURES:
        assert (smoke / f"{f.name}.png").stat().st_size > 10_000, f.name
        assert len(csv(smoke, f.name)) > 0 and (csv(smoke, f.name).series == "rewind").all()
        assert f"## {f.name}: " in readme and f"rewind reproduce kleinman2024 {f.name} --scale smoke" in readme
    assert readme.count("- headline: ") == len(FIGURES)


def test_phase_portraits_early_deficits_bite_more_with_depth_late_ones_not(smoke):
    for name in ("fig1", "fig7"):
        share = csv(smoke, name).groupby(["deficit", "depth"]).share_b.mean()
        early, late = share["early"], share["late"]
        assert early.is_monotonic_decreasing and early.iloc[0] < 0.45 and early.iloc[-1] < 0.1
        # a late deficit leaves the mode shared, on average over the initial conditions (20 at smoke scale);
        # at depth 2 the large init's early deficit costs little (0.431 against 0.447 in the authors' run)
        assert (abs(late.iloc[1:] - 0.5) < 0.06).all() and (late > early).all()
        assert (late.iloc[1:] > early.iloc[1:] + 0.25).all()


def test_gated_share_early_near_0_late_near_half_middle_between_and_falling_with_depth(smoke):
    s = csv(smoke, "share").set_index(["depth", "deficit_start"]).gated_share
    for depth in (2, 3, 4):
        assert s[depth, 0] < 0.03 and abs(s[depth, 750] - 0.5) < 1e-3
        assert s[depth, 0] < s[depth, 400] <= s[depth, 750]
    assert s[2, 400] > s[3, 400] > s[4, 400] and s[4, 400] < 0.45
    modes = csv(smoke, "fig2")  # depth 4 curves, simulation beside the analytical curve
    assert set(modes.deficit_start) == {0, 400, 750} and (modes.depth == 4).all()
    final = modes[modes.step == 1000]
    assert len(final) == 3 * 8 and (final.k_b - final.k_b_ode).abs().max() < 0.005 * final.target.max()


def test_lesion_pathway_a_never_learns_the_mode_and_gated_b_takes_it_over(smoke):
    """The authors' gate_sing run: with no competitor for the lesioned mode, b learns it after an early
    gate (the paper's point: the critical period is competition); without the lesion a keeps it."""
    f = csv(smoke, "fig3").set_index(["arm", "mode"])
    assert f.k_a["lesion", 2] < 0.02 and f.share_b["lesion", 2] > 0.99
    assert f.share_b["no lesion", 2] < 0.02 and f.share_b["lesion", 1] < 0.01


@pytest.mark.parametrize("name", ["fig11", "fig12"])
def test_nonlinear_pathways_order_as_the_linear_ones(smoke, name):
    s = csv(smoke, name).set_index("deficit_start").gated_share
    assert s[0] < 0.1 < s[400] < s[750] and abs(s[750] - 0.5) < 0.002


def test_completion_depth_1_is_flat_deeper_ones_are_damaged_once_task_1_is_learned(smoke):
    s = csv(smoke, "completion-depth").set_index(["depth", "pretrain_steps"])
    assert s.relative_error[1].abs().max() < 1e-3
    for depth in (2, 3):
        assert s.task2_error[depth, 3000] > 4 * s.task2_error[depth, 0]
    assert s.task2_error[3, 0] < 0.05 and s.task2_error[3, 3000] > 1.0


def test_completion_task_1_of_lower_rank_does_little_harm_of_higher_rank_much(smoke):
    s = csv(smoke, "completion-rank").set_index(["task1_rank", "pretrain_steps"]).task2_error
    assert s[1, 3000] < 0.1 and s[6, 3000] > 0.3 and s[1, 3000] < s[2, 3000] < s[6, 3000]
    for name, column in (("completion-observations", "observations"), ("completion-init", "init_scale"),
                         ("completion-subset", "observations")):
        table = csv(smoke, name)
        assert table[column].nunique() >= 3 and (table.depth == 3).all()
        late = table[table.pretrain_steps == 3000].set_index(column).task2_error
        early = table[table.pretrain_steps == 0].set_index(column).task2_error
        assert (late > early).all(), name  # task 1 first costs every variant
    sub = csv(smoke, "completion-subset-depth").set_index(["depth", "pretrain_steps"])
    assert sub.relative_error[1].abs().max() < 1e-3 and sub.relative_error[3, 3000] < -0.5


def test_completion_flow_tracks_gradient_descent(smoke):
    f = csv(smoke, "completion-flow")
    sv = [c for c in f.columns if c.startswith("sv_") and not c.endswith("_flow")]
    gap = (f[sv].to_numpy() - f[[f"{c}_flow" for c in sv]].to_numpy())
    assert f.sv_1.max() > 30 and abs(gap).max() < 0.06 * f.sv_1.max()


def test_rerun_trains_nothing_a_new_seed_only_its_arms_and_dry_run_lists_them(smoke, tmp_path, capsys):
    import shutil

    out = tmp_path / "k24"
    shutil.copytree(smoke / "runs" / "lesion", out / "runs" / "lesion")
    shutil.copytree(smoke / "runs" / "lesion-control", out / "runs" / "lesion-control")
    held = {p: p.read_bytes() for p in (out / "runs").rglob("*.safetensors")}
    code, stdout, err = run_cli(["reproduce", "kleinman2024", "fig3", "--seeds", "0,1", "--dry-run",
                                 "--out", str(out)], capsys)
    assert code == 0 and stdout.count("[to run]") == 2 and "fig3" in stdout and not (out / "fig3.png").exists()
    code, stdout, err = run_cli(["reproduce", "kleinman2024", "fig3", "--seeds", "0,1", "--threads", "1",
                                 "--progress", "lines", "--out", str(out)], capsys)
    assert code == 0, err
    assert all(p.read_bytes() == b for p, b in held.items())  # seed 0's archives as they were
    assert (out / "runs" / "lesion" / "depth3-seed1").is_dir() and "fig3: after the early deficit" in stdout
    code, stdout, err = run_cli(["reproduce", "kleinman2024", "fig3", "--seeds", "0,1", "--threads", "1",
                                 "--progress", "lines", "--out", str(out)], capsys)
    assert code == 0 and "linear pathways:" not in err  # nothing left to train
    code, stdout, _ = run_cli(["reproduce", "kleinman2024", "--seeds", "0,1", "--dry-run", "--out", str(out)], capsys)
    assert "plan: 13 runs" in stdout and "then draws 14 figures" in stdout  # every sweep of every figure
    assert stdout.count("[complete]") == 2 and stdout.count("[to run") == 11


@pytest.mark.parametrize("args,fragments", [
    (["reproduce", "kleinman2023"], ["no paper 'kleinman2023'", "kleinman2024"]),
    (["reproduce", "kleinman2024", "fig99"], ["has no figure 'fig99'", "fig1"]),
    (["reproduce", "kleinman2024", "--scale", "huge"], ["huge", "smoke", "paper"]),
    (["reproduce", "kleinman2024", "--seeds", "0,x"], ["bad seeds"]),
    (["reproduce"], ["name a paper"]),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, fragments):
    code, _, err = run_cli([*args, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(f in err for f in fragments), err
    assert not (tmp_path / "r").exists()


def test_list_names_every_figure(capsys):
    code, stdout, _ = run_cli(["reproduce", "--list"], capsys)
    from rewind.reproduce.kleinman2024 import FIGURES

    assert code == 0 and "kleinman2024" in stdout and all(f.name in stdout for f in FIGURES)


def test_fig1_at_paper_scale_from_the_authors_draws_gives_their_numbers(tmp_path):
    """With the authors' seed for numpy's generator (their 100 initial conditions), rewind's phase portrait
    is their computation: the mean final shares their script gives (the figure's reference rows)."""
    from rewind.reproduce.figure import Drawing
    from rewind.reproduce.kleinman2024 import FIGURES

    fig1 = next(f for f in FIGURES if f.name == "fig1")
    d = Drawing(fig1, "paper", [49827345], True, tmp_path / "fig1.png", tmp_path / "fig1.csv")
    fig1.draw(d)
    table = pd.read_csv(d.csv)
    ours = table[table.series == "rewind"].groupby(["deficit", "depth"]).share_b.mean()
    refs = table[table.series == "reference"].set_index(["deficit", "depth"])
    assert len(refs) == 8 and refs.source.str.contains("phase-large-init.py").all()
    for key, row in refs.iterrows():
        assert abs(ours[key] - row.share_b) < 1e-5, key


def test_figures_are_redrawn_when_only_how_they_are_drawn_changes(smoke):
    """With an executor the last job draws the figures; a command that finds every run complete but
    the figures drawn otherwise (here: --reference) draws them itself, and only then."""
    from rewind.reproduce import config as rconfig
    from rewind.reproduce import run

    def plan(**options):
        return run.plan("kleinman2024", ["fig3"], rconfig.load(options), smoke)

    assert not run.stale(plan()) and run.stale(plan(reference=True)) and run.stale(plan(seeds="0,1")) is False


def test_a_reproduce_plan_is_read_back_as_every_job_reads_it(tmp_path):
    """An executor's job reads the plan file back by its hash: a `rewind reproduce` plan (which names
    `rewind.reproduce.run`, not a study) must pass the launch folder's reader unchanged."""
    from rewind.launch import files
    from rewind.reproduce import config as rconfig
    from rewind.reproduce import run

    plan = run.plan("kleinman2024", ["fig3", "completion-rank"], rconfig.load({}), tmp_path / "k24")
    path = plan.save()
    assert files.read_plan(path) == plan and path.name == f"plan-{plan.key()}.json"
    assert [j.name for j in plan.jobs] == ["lesion/lesion", "lesion-control/gate", "completion-rank/rank"]


def test_settings_come_from_a_toml_file_and_flags_win(tmp_path):
    from rewind.reproduce import config as rconfig

    path = tmp_path / "k24.toml"
    path.write_text('[reproduce]\nscale = "paper"\nreference = true\n[runtime]\nthreads = 2\n')
    settings = rconfig.load({"reference": False}, str(path))
    assert (settings.reproduce.scale, settings.reproduce.reference, settings.runtime.threads) == ("paper", False, 2)
    assert settings.reproduce.seed_list() == [0, 1, 2]  # the paper scale's seeds

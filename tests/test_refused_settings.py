"""Every impossible value (issue 21) and how a refusal reads: one line on stderr saying what is wrong
and how to fix it, exit status 2, no traceback, nothing written. One row per setting."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from conftest import check, run_cli
from rewind.errors import UserError

REPO = Path(__file__).resolve().parents[1]


# --- impossible settings --------------------------------------------------------------------------------

WS = ["warm-start", "--steps", "10it", "--second-steps", "10it"]
SETTINGS = [
    (["train", "--lr", "inf"], "lr must be a finite number"),
    # refused before the trunk trains (not when the stacked branches would start)
    (["imp", "--rewind-iter", "10it", "--parallel", "2", "--until-train-acc", "0.9"], "train one at a time"),
    (["critical-period", "--deficit", "blur", "--switch-at", "0,10it", "--parallel", "2", "--until-train-acc", "0.95"],
     "train one at a time"),
    (["train", "--lr", "nan"], "lr must be a finite number"),
    (["train", "--lr-gamma", "inf"], "lr_gamma must be a finite number"),
    (["train", "--until-train-acc", "nan"], "until_train_acc must be a finite number"),
    (["train", "--betas", "nan,0.9"], "betas"),
    ([*WS, "--second-lr", "inf"], "second_lr"),
    ([*WS, "--shrink", "inf"], "shrink"),
    ([*WS, "--perturb-sigma", "nan"], "perturb_sigma"),
    ([*WS, "--optimizers", "sgd:inf"], "learning rates"),
    ([*WS, "--study", "transition", "--transition-gamma", "nan"], "--transition-gamma"),
    ([*WS, "--study", "transition", "--transition-gamma", ""], "at least one value"),
    (["linear", "pathways", "--lr", "inf"], "lr must be a finite number"),
    (["linear", "completion", "--init-scale", "nan"], "init_scale must be a finite number"),
    ([*WS, "--widths", "8,16"], "not used by --study arms; it is a setting of --study size"),
    ([*WS, "--study", "shrink", "--stage-shrink"], "--study stages"),
    ([*WS, "--study", "length", "--first-lr", "0.1"], "--study lr"),
    ([*WS, "--study", "shrink", "--reset-from", "2"], "--study reset"),
    ([*WS, "--study", "reset", "--second-lr", "0.1,0.2"], "takes one second_lr"),
    (["critical-period", "--deficit", "blur", "--window", "10it", "--switch-at", "0,10it"], "--switch-at"),
    (["critical-period", "--deficit", "blur", "--total-steps", "100it", "--after", "50it"], "--after"),
    (["imp", "--perturb-scale", "2"], "--perturb noise"),
    (["imp", "--transition-gamma", "0.5"], "No such option"),
    ([*WS, "--optimizers", "sgd:0.1,sgd:0.1"], "twice"),
    ([*WS, "--optimizers", "sgd,sgd:0.05", "--lr", "0.05"], "lists sgd:0.05:0 twice"),
    ([*WS, "--study", "size", "--widths", "8,8"], "twice"),
    ([*WS, "--study", "stages", "--stages", "1,1"], "twice"),
    (["train", "--lr-milestones", "10it,10it"], "twice"),
    (["train", "--deficit", "blur:0it-10it,blur:0it-10it"], "twice"),
    (["train", "--executor", "slurm", "--sbatch", "account=a,account=b"], "twice"),
    ([*WS, "--study", "stages", "--stages", "100"], "10 classes"),
    ([*WS, "--optimizers", "adam:0.001", "--momentum", "0.9"], "momentum is a setting of sgd"),
    ([*WS, "--optimizer", "adam", "--momentum", "0.9"], "momentum is a setting of sgd"),
    ([*WS, "--optimizer", "adam", "--optimizers", "sgd:0.1"], "--optimizer adam is not used"),
    ([*WS, "--reset-layers", "blocks.99"], "--reset-layers names no layer 'blocks.99'"),
]


@pytest.mark.parametrize("args, word", SETTINGS, ids=[" ".join(s[0][-2:]) for s in SETTINGS])
def test_impossible_setting(tmp_path, capsys, args, word):
    """Refused before anything is read or trained: nothing is written."""
    data = ["--data", "synthetic", "--data-dir", str(tmp_path / "cache")] if args[0] != "linear" else []
    code, out, err = run_cli([*args, *data, "--out", str(tmp_path / "r")], capsys)
    check(code, out, err, 2, word)
    assert "bad phase" not in err and "(gamma=" not in err  # the option the user typed, not an internal phase
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


def test_impossible_value_in_a_config_file(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("[train]\nlr = inf\n[warm]\nfirst_steps = '10it'\n")
    code, out, err = run_cli(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")], capsys)
    check(code, out, err, 2, "lr must be a finite number, got inf (--lr, in ")
    (tmp_path / "c.toml").write_text("[warm]\nfirst_steps = '10it'\n")
    code, out, err = run_cli(["warm-start", "--study", "shrink", "--config", str(tmp_path / "c.toml"),
                              "--out", str(tmp_path / "r")], capsys)
    check(code, out, err, 2, "first_steps (--first-steps) is not used by --study shrink; it is a setting of "
                             "--study length")
    assert not (tmp_path / "r").exists()


def test_a_recipe_serves_every_warm_start_study(tmp_path, capsys):
    """The warm-start recipe's shrink-perturb settings (for its own study, arms) do not stop another
    study chosen on the command line; given on the command line, they are refused."""
    recipe = str(REPO / "configs" / "resnet18_cifar10_warmstart.toml")
    base = ["warm-start", "--config", recipe, "--data", "synthetic", "--holdout", "", "--data-dir",
            str(tmp_path / "cache"), "--out", str(tmp_path / "r"), "--dry-run"]
    code, out, err = run_cli([*base, "--study", "length", "--first-steps", "0,10ep", "--until-train-acc", "0"], capsys)
    assert code == 0, err
    assert "first_steps=200" in out and "shrink-perturb" not in out  # the length study (10ep: 200 it), not arms
    code, out, err = run_cli([*base, "--study", "length", "--first-steps", "0,10ep", "--until-train-acc", "0",
                              "--shrink", "0.3"], capsys)
    check(code, out, err, 2, "shrink (--shrink) is not used by --study length")


@pytest.mark.parametrize("args", [["runs", "list", "{tmp}/nowhere"], ["runs", "list", "{tmp}/file"]])
def test_runs_list_of_no_folder(tmp_path, capsys, args):
    (tmp_path / "file").write_text("x")
    code, out, err = run_cli([a.format(tmp=tmp_path) for a in args], capsys)
    check(code, out, err, 2, "does not exist" if "nowhere" in args[-1] else "is a file")


# --- messages -------------------------------------------------------------------------------------------

def test_ctrl_c_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr("rewind.train.trunk.train", interrupted)
    code, _, err = run_cli(["train", "--data", "synthetic", "--out", str(tmp_path / "r")], capsys)
    assert code == 130 and err == "rewind: error: interrupted; run the same command again to resume where it stopped\n"


def test_warnings_never_come_before_the_one_line(tmp_path, capsys, monkeypatch):
    def warned(*_, **__):
        warnings.warn("a torch warning", UserWarning)
        raise UserError("refused")

    monkeypatch.setattr("rewind.train.trunk.train", warned)
    code, _, err = run_cli(["train", "--data", "synthetic", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err == "rewind: error: refused\n"


@pytest.mark.parametrize("kind", ["text as .tar.gz", "an image that is no image"])
def test_a_bad_dataset_is_one_line_without_object_reprs(tmp_path, capsys, kind):
    if kind == "text as .tar.gz":
        source = tmp_path / "d.tar.gz"
        source.write_text("hello\n")
    else:
        source = tmp_path / "d"
        for split in ("train", "test"):
            (source / split / "a").mkdir(parents=True)
            (source / split / "a" / "x.png").write_bytes(b"not a png")
    code, out, err = run_cli(["train", "--data", str(source), "--data-dir", str(tmp_path / "cache"),
                              "--out", str(tmp_path / "r")], capsys)
    check(code, out, err, 2, str(source))
    assert "0x" not in err

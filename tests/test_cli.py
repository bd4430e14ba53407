"""Every bad input gives one line on stderr, exit status 2, no traceback, and leaves saved files alone."""

import json

import pytest

from conftest import cli_args, run_cli
from rewind.archive.lock import FolderLock

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only waits


def tiny_args(tmp_path, **overrides):
    return cli_args(data_dir=str(tmp_path / "cache"), **overrides)


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rewind: error: "), err
    for f in fragments:
        assert f in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    out = tmp / "run"
    from conftest import tiny_config
    from rewind.train.trunk import train

    train(tiny_config(data_dir=str(tmp / "cache"), steps="40it"), out)
    return tmp, out


def test_train_prints_the_final_accuracy(tmp_path, capsys):
    code, out, _ = run_cli(["train", "--out", str(tmp_path / "r"), *tiny_args(tmp_path, steps="20it")], capsys)
    assert code == 0 and out.startswith(f"trunk {tmp_path / 'r'}: final test accuracy")


def test_unknown_config_key(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("[train]\nlr_milestone = '1ep'\n")
    code, _, err = run_cli(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "unknown config key 'train.lr_milestone'", "did you mean 'train.lr_milestones'")
    assert not (tmp_path / "r").exists()


def test_unknown_option(tmp_path, capsys):
    code, _, err = run_cli(["train", "--lrr", "0.1", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "--lrr")


def test_bad_step_string(tmp_path, capsys):
    code, _, err = run_cli(["train", "--steps", "5x", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "bad steps '5x'", "'1ep109it'")


def test_missing_dataset(tmp_path, capsys):
    code, _, err = run_cli(["train", *tiny_args(tmp_path, source=str(tmp_path / "nowhere")), "--out",
                            str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "not found", "--data")


def test_corrupt_checkpoint_names_the_file(trained, capsys):
    tmp, out = trained
    path = out / "trunk" / "checkpoints" / "it00000040.safetensors"
    original = path.read_bytes()
    blob = bytearray(original)
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    try:
        code, _, err = run_cli(["train", *tiny_args(tmp, steps="40it"), "--out", str(out)], capsys)
        assert_one_line_error(code, err, str(path), "corrupt")
        assert path.read_bytes() == bytes(blob)  # refused, not overwritten
    finally:
        path.write_bytes(original)


def test_locked_run_folder(trained, capsys):
    tmp, out = trained
    with FolderLock(out):
        code, _, err = run_cli(["train", *tiny_args(tmp, steps="40it"), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "being written by another process")


def test_different_config_in_the_same_folder(trained, capsys):
    tmp, out = trained
    before = (out / "manifest.json").read_text()
    code, _, err = run_cli(["train", *tiny_args(tmp, steps="40it", lr=0.2), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "different config", "train.lr: 0.05 -> 0.2")
    assert (out / "manifest.json").read_text() == before


def test_runs_list_and_show(trained, capsys):
    tmp, out = trained
    code, listing, _ = run_cli(["runs", "list", str(tmp)], capsys)
    assert code == 0 and str(out) in listing and "complete" in listing and "40/40" in listing
    code, shown, _ = run_cli(["runs", "show", str(out)], capsys)
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 0 and "status     complete" in shown
    assert "checkpoints (8): 0, 1, 2, 5, 10, 20, 25, 40" in shown
    assert f"{100 * manifest['final_test']['acc']:.2f}%" in shown
    assert 'lr = 0.05' in shown


def test_help_shows_every_option_with_its_default(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    for fragment in ("--lr FLOAT", "[default: 0.1]", "--save-at TEXT", "--device [auto|cpu|cuda]"):
        assert fragment in out


def test_pretraining_without_a_length_uses_the_modes_default(tmp_path, capsys):
    """`--pretrain blur` alone trains blur's default 40 epochs (here 1 iteration each), says so in its
    first line, records the length in the manifest and shows it in `rewind runs show`."""
    out = tmp_path / "r"
    args = tiny_args(tmp_path, train_examples=8, test_examples=8, batch_size=8, width=4, steps="44it",
                     lr_milestones="", eval_every="44it", log_every="44it", save_every="44it")
    code, stdout, err = run_cli(["train", "--out", str(out), "--pretrain", "blur", "--stats-every", "0", *args],
                                capsys)
    assert code == 0, err
    assert stdout.splitlines()[0] == ("pretrain blur: 40ep (blur's default; --pretrain-steps sets another), "
                                      "blur size 8, constant lr 0.1, schedule offset")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["pretrain"]["pretrain_steps"] == "40ep"
    assert manifest["identity"]["pretrain"]["pretrain_steps"] == "40ep"
    assert (manifest["pretrain_iterations"], manifest["schedule_offset"], manifest["total_iterations"]) == (40, 40, 4)
    from rewind.archive import run as runs

    assert runs.read(out).stage("trunk/pretrain").steps()[-1] == 40
    code, shown, _ = run_cli(["runs", "show", str(out)], capsys)
    assert code == 0 and ("pretrain   blur: 40ep = 40 iterations, blur size 8, constant lr 0.1, schedule offset"
                          in shown.splitlines())
    # The same length given: the same run (its hash), found complete rather than refused or retrained.
    code, stdout, err = run_cli(["train", "--out", str(out), "--pretrain", "blur", "--pretrain-steps", "40ep",
                                 "--stats-every", "0", *args], capsys)
    assert code == 0, err
    assert stdout.splitlines()[0].startswith("pretrain blur: 40ep, blur size 8")
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == manifest["config_hash"]


@pytest.mark.parametrize("command", ["train", "imp"])
def test_an_explicit_zero_pretraining_length_is_an_error(tmp_path, capsys, command):
    code, _, err = run_cli([command, "--pretrain", "rotation", "--pretrain-steps", "0it", "--out",
                            str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "--pretrain rotation needs a length above 0", "mode's default (40ep)")
    assert not (tmp_path / "r").exists()


# The bad inputs a new user tried (issue 15), each through every command that takes it.
BAD = [
    (["--lr", "-1"], "lr must be > 0", ["train", "imp", "critical-period", "warm-start"]),
    (["--width", "0"], "width must be a whole number >= 1", ["train", "imp", "critical-period", "warm-start"]),
    (["--train-examples", "-5"], "train_examples must be a whole number >= 0",
     ["train", "imp", "critical-period", "warm-start"]),
    (["--steps", "0it"], "steps must be above 0", ["train", "imp", "warm-start"]),
    (["--pretrain-steps", "5xx"], "bad pretrain_steps '5xx'", ["train", "imp"]),
    (["--optimizer", "sgdd"], "'sgdd' is not one of 'sgd', 'adam', 'adamw', 'rmsprop'", ["train", "warm-start"]),
]


@pytest.mark.parametrize("args, message, commands", BAD, ids=[b[0][0] + " " + b[0][1] for b in BAD])
def test_out_of_range_settings_stop_every_command_before_it_writes(tmp_path, capsys, args, message, commands):
    """One line naming the option, exit status 2, no traceback and no output folder, with the defaults'
    dataset (not there offline): the settings are checked before anything loads or trains."""
    for command in commands:
        extra = ["--deficit", "blur"] if command == "critical-period" else []
        code, _, err = run_cli([command, *extra, *args, "--out", str(tmp_path / command)], capsys)
        assert_one_line_error(code, err, message, args[0] if "must" in message else args[1])
        assert not (tmp_path / command).exists(), command


def test_a_bad_choice_in_a_config_file_lists_the_choices(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[pretrain]\npretrain = "blurr"\n')
    code, _, err = run_cli(["imp", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "pretrain must be one of none, blur, random-labels, rotation, subset; "
                                     "got 'blurr'")
    assert not (tmp_path / "r").exists()


def test_stability_needs_two_points(trained, capsys):
    tmp, out = trained
    before = sorted(p.name for p in out.rglob("*"))
    code, _, err = run_cli(["stability", str(out), "--at", "0", "--points", "1"], capsys)
    assert_one_line_error(code, err, "--points", "1 is not in the range x>=2")
    assert sorted(p.name for p in out.rglob("*")) == before

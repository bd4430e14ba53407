"""Every bad input gives one line on stderr, exit status 2, no traceback, and leaves saved files alone."""

import json

import pytest

from conftest import cli_args, run_cli
from rewind.archive.lock import FolderLock


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

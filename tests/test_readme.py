"""Every `rewind ...` command line in README's code blocks still parses and names real options:
each runs with --dry-run (a plan, nothing trained) against stand-in trunk archives."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import run_cli
from rewind import config as cfg
from rewind.archive.manifest import Manifest
from rewind.train.schedule import DENSE_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
READ_ONLY = ("runs",)  # commands that write nothing and take no --dry-run
DATA_COMMANDS = ("train", "imp", "critical-period", "warm-start", "stats", "stability")


def readme_commands(text: str) -> list[str]:
    """The rewind command lines of the Markdown code blocks: continuations joined, comments cut,
    `a && b` and `a; b` split, `.venv/bin/rewind` read as `rewind`."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        names = {}  # NAME="..." lines: $NAME in the commands below
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if m := re.fullmatch(r"([A-Z_]+)=(.*)", line):
                names[m[1]] = " ".join(shlex.split(m[2]))
                continue
            line = re.sub(r"\$([A-Z_]+)", lambda v: names.get(v[1], v[0]), line)
            for part in re.split(r"&&|;", line):
                part = " ".join(part.split())
                if part.startswith(".venv/bin/rewind "):
                    part = part.removeprefix(".venv/bin/")
                if part.startswith("rewind "):
                    commands.append(part)
    return commands


def _stand_in_trunk(root: Path) -> None:
    """A complete trunk archive of the ResNet-20 recipe as manifests describe it: every dense
    checkpoint recorded (empty files), enough for plans, which read nothing else."""
    config = cfg.load(ROOT / "configs" / "resnet20_cifar10.toml")
    manifest = Manifest.new(root / "manifest.json", kind="trunk", config=config.to_dict(),
                            identity=config.experiment_dict(), config_hash=config.hash(), iterations_per_epoch=391,
                            total_iterations=62560, schedule_offset=0, status="complete",
                            final_test={"acc": 0.9, "loss": 0.3}, best_test_acc=0.9)
    folder = root / "trunk" / "checkpoints"
    folder.mkdir(parents=True)
    for step in [*DENSE_CHECKPOINTS, 62560]:
        for name in (f"it{step:08d}.safetensors", f"it{step:08d}.state.pt"):
            (folder / name).touch()
            manifest.files[f"trunk/checkpoints/{name}"] = "0" * 64
    manifest.save()


def _prepared(command: str, tmp: Path) -> list[str]:
    """The command's arguments with `--dry-run`, the shared data swapped for synthetic data, and any
    archive it reads (`--from runs/X`, `stats runs/X`, ...) made as a stand-in trunk."""
    args = shlex.split(command)[1:]
    args = ["synthetic" if a.endswith("cifar10-jpeg.tar.gz") else a for a in args]
    reads = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--from"]
    if args[0] in ("stats", "stability") or args[:2] == ["runs", "show"]:
        reads.append(args[2] if args[0] == "runs" else args[1])
    for run in reads:
        if not (tmp / run / "manifest.json").exists():
            _stand_in_trunk(tmp / run)
    if args[:2] == ["runs", "summarize"]:
        return [*args, "--help"]  # it needs a launched study: that the command and its argument exist
    return args if args[0] in READ_ONLY or "--list" in args else [*args, "--dry-run"]  # --list: a listing


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_has_command_lines_to_check():
    assert len(COMMANDS) >= 20 and COMMANDS[0].startswith("rewind imp --config configs/smoke.toml")
    assert readme_commands("```bash\nA='--c 2'\nrewind a \\\n  --b 1  # c\nx && rewind d $A; rewind e\n```\n") == \
        ["rewind a --b 1", "rewind d --c 2", "rewind e"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_line_runs_as_written(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    args = _prepared(command, tmp_path)
    if args[0] in DATA_COMMANDS:
        args += ["--data-dir", str(tmp_path / "cache")]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(args, capsys)
    assert code == 0, f"{command}\n{err}"
    if "--dry-run" in args:
        assert "plan: " in out and out.index("plan: ") <= out.index("\n") + 1  # at most a pre-training line first
        assert sorted(tmp_path.rglob("*")) == before  # nothing written: no archive, no data cache


def test_a_readme_line_with_an_option_that_does_not_exist_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    args = _prepared("rewind imp --config configs/smoke.toml --rewind-itr 50 --out runs/x", tmp_path)
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "No such option '--rewind-itr'" in err

"""Shared helpers: a tiny, fast, learnable configuration on synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import rewind.studies  # noqa: F401  (every study's and executor's settings section, as the CLI has them)
from rewind import config as cfg

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"

TINY = dict(source="synthetic", train_examples=1000, test_examples=500, model="resnet8", width=8,
            steps="120it", batch_size=32, lr=0.05, lr_milestones="80it", eval_every="40it", log_every="20it",
            save_every="20it", progress="none")


def cli_args(**overrides) -> list[str]:
    """The tiny config as `rewind train` options (`source` is the `--data` option)."""
    args = []
    for key, value in {**TINY, **overrides}.items():
        args += [f"--{'data' if key == 'source' else key.replace('_', '-')}", str(value)]
    return args


def tiny_config(**overrides) -> cfg.Config:
    return cfg.load(None, {**TINY, **overrides})


def check(code: int, out: str, err: str, expected: int, word: str) -> None:
    """Exit status `expected`; on failure one line `rewind: error: ...` holding `word`, else `word` in stdout."""
    assert "Traceback" not in err and code == expected, err
    if expected:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rewind: error: ") and word in lines[0], err
        assert "object at 0x" not in err
    else:
        assert word in out, out


def file_states(root) -> dict[str, tuple[bytes, int]]:
    """Every file under root (locks aside): its bytes and modification time."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def same_checkpoint(a, b) -> bool:
    """Equal tensors (bit for bit) and metadata; the file bytes may differ in the header's key order."""
    import torch

    from rewind.archive.checkpoints import read_tensors

    (ta, ma), (tb, mb) = read_tensors(a, None), read_tensors(b, None)
    return ma == mb and ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # state that is not a weight


def run_ok(args: list[str]) -> None:
    """`rewind ARGS` in this process (for module fixtures, which have no capsys); it must succeed."""
    from rewind.cli import main

    old, sys.argv = sys.argv, ["rewind", *args]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = old
    assert e.value.code == 0


def load(root, stage: str, step: int) -> dict:
    """The tensors of a run's checkpoint at `step` of `stage`."""
    from rewind.archive import run as runs

    return runs.read(root).stage(stage).load(step).tensors


def stacked_sizes(monkeypatch) -> list[int]:
    """Records how many runs each stacked (--parallel) segment trains together."""
    from rewind.train import replicas

    sizes, real = [], replicas.run_segments
    monkeypatch.setattr(replicas, "run_segments", lambda segments: sizes.append(len(segments)) or real(segments))
    return sizes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A data cache shared by a module's tests (the synthetic data is made once)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny config whose data cache lives in the test's own folder."""
    return tiny_config(data_dir=str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny tensors: on a 2-core machine shared with other
    processes, two OpenMP threads waiting on each other made steps up to ten times slower.
    Modules opt in (`pytestmark = pytest.mark.usefixtures("one_thread")`): results depend on the
    thread count, so tests that compare runs across processes keep the default."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `rewind ARGS` in-process; returns (exit code, stdout, stderr)."""
    from rewind.cli import main

    old = sys.argv
    sys.argv = ["rewind", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err

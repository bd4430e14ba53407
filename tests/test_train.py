import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import cli_args, tiny_config
from rewind.archive import run as runs
from rewind.archive.stage import Stage
from rewind.train import loop
from rewind.train.trunk import train


def final_weights(root: Path) -> dict[str, torch.Tensor]:
    run = runs.read(root)
    stage = Stage(run.manifest, "trunk")
    return stage.load(stage.steps()[-1]).tensors


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted tiny run, shared by the tests that compare against it."""
    root = tmp_path_factory.mktemp("ref")
    config = tiny_config(data_dir=str(root / "cache"))
    result = train(config, root / "run")
    return config, root / "run", result


def test_tiny_run_learns_and_writes_the_archive(reference):
    config, root, result = reference
    assert result.final_test["acc"] > 0.8  # synthetic data, 10 classes: chance is 0.1
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["total_iterations"] == 120
    assert manifest["config_hash"] == config.hash() and manifest["versions"]["torch"] == torch.__version__
    held = Stage(runs.read(root).manifest, "trunk").steps()
    assert held == [0, 1, 2, 5, 10, 20, 25, 40, 50, 60, 80, 100, 120]
    metrics = pd.read_csv(root / "trunk" / "metrics.csv")
    assert list(metrics.columns[:6]) == ["split", "step", "epoch", "loss", "acc", "lr"]
    assert metrics[metrics.split == "test"].step.tolist() == [0, 40, 80, 120]
    assert metrics[metrics.split == "train"].step.tolist() == list(range(20, 121, 20))
    assert metrics[metrics.split == "train"].lr.tolist() == pytest.approx([0.05] * 4 + [0.005] * 2)  # milestone 80it
    assert metrics[metrics.split == "test"].acc.iloc[-1] == pytest.approx(result.final_test["acc"])


def test_tensorboard_holds_train_and_test_scalars(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, root, result = reference
    acc = EventAccumulator(str(root / "trunk"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/lr", "test/loss", "test/acc"} <= tags
    test_acc = acc.Scalars("test/acc")
    assert [e.step for e in test_acc] == [0, 40, 80, 120]
    assert test_acc[-1].value == pytest.approx(result.final_test["acc"])
    # Hyperparameters live in the run's own folder (no separate hparams run).
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["train.lr"].number_value == 0.05 and session.hparams["model.model"].string_value == "resnet8"
    assert [p for p in (root / "trunk").iterdir() if p.is_dir()] == [root / "trunk" / "checkpoints"]


def test_same_config_gives_bit_identical_weights(reference, tmp_path):
    config, root, _ = reference
    train(config, tmp_path / "again")
    assert_same_weights(root, tmp_path / "again")


def test_interrupted_run_resumes_to_identical_weights_and_metrics(reference, tmp_path, monkeypatch):
    config, root, _ = reference
    real_step = loop.train_step

    def interrupted(state, iteration):
        if iteration == 30:
            raise KeyboardInterrupt
        return real_step(state, iteration)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run")
    assert runs.read(tmp_path / "run").status == "running"
    monkeypatch.setattr(loop, "train_step", real_step)
    result = train(config, tmp_path / "run")
    assert result.resumed_from == 25  # between two log steps: the partial training means must carry over
    assert_same_weights(root, tmp_path / "run")
    ref = pd.read_csv(root / "trunk" / "metrics.csv")
    resumed = pd.read_csv(tmp_path / "run" / "trunk" / "metrics.csv")
    pd.testing.assert_frame_equal(ref, resumed)


def test_sigkill_halfway_then_same_command_matches_uninterrupted(reference, tmp_path):
    config, root, _ = reference
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "rewind.cli", "train", "--out", str(out), *cli_args(data_dir=str(tmp_path / "cache"))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        files = json.loads((out / "manifest.json").read_text()).get("files", {}) if (out / "manifest.json").exists() else {}
        if any("it00000060.state" in f for f in files):  # halfway through the reference's 120 iterations
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.read(out).status == "running"
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert_same_weights(root, out)  # the uninterrupted run of the same config


def test_rerunning_a_complete_run_changes_nothing(reference):
    config, root, result = reference
    before = {p: p.stat().st_mtime_ns for p in (root / "trunk" / "checkpoints").iterdir()}
    again = train(config, root)
    assert again.final_test == result.final_test
    assert {p: p.stat().st_mtime_ns for p in (root / "trunk" / "checkpoints").iterdir()} == before


@pytest.mark.parametrize("setting, mode", [("on", None), ("graphs", "reduce-overhead")])
def test_compiled_step_gives_the_eager_weights(tmp_path, monkeypatch, setting, mode):
    """The compile path (used on CUDA) wraps the same model; with the eager backend it must not change a bit.
    `graphs` asks torch.compile for CUDA graphs (mode reduce-overhead), which the eager backend ignores."""
    monkeypatch.setenv("REWIND_COMPILE_BACKEND", "eager")
    config = tiny_config(data_dir=str(tmp_path / "cache"), steps="10it", eval_every="10it", stats_every="0it")
    train(config, tmp_path / "eager")
    modes, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: modes.append(kw["mode"]) or real(model, **kw))
    train(config.with_values(compile=setting), tmp_path / "compiled")
    assert modes == [mode]
    assert_same_weights(tmp_path / "eager", tmp_path / "compiled")
    # Evaluation runs through the compiled forward too, in eval mode: the same test rows.
    tests = [pd.read_csv(tmp_path / r / "trunk" / "metrics.csv").query("split == 'test'") for r in ("eager", "compiled")]
    assert len(tests[0]) == 2
    pd.testing.assert_frame_equal(tests[0].reset_index(drop=True), tests[1].reset_index(drop=True))


def test_bf16_autocast_trains_close_to_fp32_and_keeps_masks_exact(tmp_path):
    """bf16 autocast rounds the forward (so weights differ from fp32), but the weights, the masks and
    the optimizer stay fp32: pruned entries stay exactly zero and the run stays near the fp32 one."""
    from rewind.prune import masks as M
    from rewind.train.trunk import Setup

    runs_ = {}
    for precision in ("fp32", "bf16"):
        setup = Setup.create(tiny_config(data_dir=str(tmp_path / "cache"), precision=precision))
        model = setup.new_model()
        g = torch.Generator().manual_seed(0)
        masks = {k: torch.rand(m.shape, generator=g) < 0.5 for k, m in M.ones(model).items()}
        state = setup.state(model, masks=masks)
        for it in range(10):
            loss, _, _ = loop.train_step(state, it)
        runs_[precision] = (state, loss.item())
    (fp32, loss32), (bf16, loss16) = runs_["fp32"], runs_["bf16"]
    assert bf16.autocast == torch.bfloat16 and fp32.autocast is None
    params16 = dict(bf16.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params16.values())
    for name, keep in bf16.masks.items():
        assert torch.count_nonzero(params16[name][~keep]) == 0
        assert torch.count_nonzero(bf16.optimizer.state[params16[name]]["momentum_buffer"][~keep]) == 0
    # Over all parameters: bf16 was used (not bit-equal), and the weights stay within 1% after 10 steps
    # (measured 0.16%; a wrong learning rate or mask is off by far more). Zero-initialised BatchNorm
    # biases alone differ by up to 15%, relative to their small size.
    w32, w16 = (torch.cat([p.detach().flatten() for p in s.model.parameters()]) for s in (fp32, bf16))
    rel = ((w16 - w32).norm() / w32.norm()).item()
    assert 0 < rel < 0.01, rel
    assert abs(loss16 - loss32) < 0.01

"""tools/gpu_check.py, the prepared GPU check: with --tiny it runs end to end on a CPU and writes
every field, the settings a CPU cannot run skipped with their reasons, so the one GPU run of it
does not fail on a typo."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.py"

CORRECTNESS = ("eager", "eager_repeat", "rounding_floor", "compile", "graphs", "pruned_eager", "pruned_compile",
               "pruned_graphs", "replicas")
THROUGHPUT = ("reference", "fast_eager", "fast_compile", "fast_graphs", "fast_bf16", "eval_eager", "eval_compile",
              "eval_graphs", "replicas_1", "replicas_4", "replicas_8", "replicas_16", "replicas_32")
CUDA_ONLY = ("graphs", "pruned_graphs", "fast_graphs", "eval_graphs")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REWIND_COMPILE_BACKEND": "eager"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out),
                           "--data-dir", str(out / "cache")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text())


def test_environment(tiny_run):
    env = tiny_run[1]["environment"]
    assert env["torch"] == torch.__version__
    assert env["cpu_count"] >= 1 and env["device"] == "cpu"
    assert (env["gpu"] is None) == (not torch.cuda.is_available())
    assert {"cuda", "gpu_memory_gib", "compile_backend"} <= env.keys()
    assert env["compile_backend"] == "eager" and env["model"] == "resnet8"


def test_correctness(tiny_run):
    report = tiny_run[1]
    c, tol = report["correctness"], report["tolerance"]
    assert set(CORRECTNESS) <= c.keys()
    for name in CUDA_ONLY[:2]:
        assert "CUDA" in c[name]["skipped"]
    # eager against eager from the same state: bit for bit on a CPU
    assert c["eager_repeat"]["rel_diff"] == 0.0 and c["eager_repeat"]["pass"] is True
    # dynamo's capture with the eager backend runs the same kernels: no difference at all
    assert c["compile"]["rel_diff"] == 0.0 and c["compile"]["pass"] is True
    # the chaos floor is measurable and under the tolerance it justifies
    assert 0 < c["rounding_floor"]["rel_diff"] < tol
    for name in ("pruned_eager", "pruned_compile"):
        assert c[name]["pruned_zero"] is True and c[name]["nonzero_pruned"] == 0 and c[name]["pruned_entries"] > 0
    rep = c["replicas"]
    assert rep["pass"] is True and len(rep["per_replica"]) == 4 and max(rep["per_replica"]) == rep["rel_diff"] < tol


def test_throughput(tiny_run):
    t = tiny_run[1]["throughput"]
    assert set(THROUGHPUT) <= t.keys()
    for name in THROUGHPUT:
        if name in CUDA_ONLY:
            assert "CUDA" in t[name]["skipped"]
        else:
            assert t[name]["images_s"] > 0, (name, t[name])
    for name in ("fast_eager", "fast_compile", "fast_bf16", "eval_eager", "eval_compile", "replicas_8"):
        assert t[name]["compile_s"] >= 0 and t[name]["warmup_s"] > 0
    assert t["fast_compile"]["compile"] == "on" and t["fast_bf16"]["precision"] == "bf16"
    assert t["replicas_32"]["replicas"] == 32 and t["replicas_32"]["vs_single_fast"] > 0


def test_full_run_and_table(tiny_run):
    out, report = tiny_run
    run = report["full_run"]["run"]
    # the tiny recipe (2 epochs) fits the default budget: one whole run through `trunk.train`
    assert run["status"] == "whole" and run["epochs"] == run["recipe_epochs"] == 2
    assert run["setting"] in ("eager", "compile") and run["wall_s"] > 0 and 0 <= run["test_acc"] <= 1
    assert (Path(run["archive"]) / "manifest.json").is_file()
    table = (out / "gpu_check.md").read_text()
    for name in (*CORRECTNESS, *THROUGHPUT, "run"):
        assert f"| {name} |" in table


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    monkeypatch.setenv("REWIND_COMPILE_BACKEND", "eager")
    threads = torch.get_num_threads()
    yield importlib.import_module("gpu_check")
    torch.set_num_threads(threads)


def test_plan_full_run(gpu_check):
    plan = gpu_check.plan_full_run
    # 160 epochs of 1 s, evaluations of 0.1 s (161 of them), 10 s compiling: 186.1 s
    assert plan(160, 1.0, 0.1, 10.0, 300.0) == {"status": "whole", "epochs": 160, "estimated_s": pytest.approx(186.1)}
    # 100 s left: 90 usable, 80 after compiling: 72 epochs of 1.1 s
    assert plan(160, 1.0, 0.1, 10.0, 100.0) == {"status": "projected", "epochs": 72,
                                                "estimated_s": pytest.approx(186.1)}
    assert plan(160, 1.0, 0.1, 10.0, 5.0)["epochs"] == 0


def test_no_budget_skips_with_reasons(gpu_check, tmp_path):
    assert gpu_check.main(["--tiny", "--device", "cpu", "--budget-s", "0", "--out", str(tmp_path),
                           "--data-dir", str(tmp_path / "cache"), "--skip", "full_run"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["torch"] == torch.__version__
    for section, names in (("correctness", CORRECTNESS), ("throughput", THROUGHPUT)):
        for name in names:
            reason = report[section][name]["skipped"]
            assert ("CUDA" if name in CUDA_ONLY else "budget") in reason
    assert report["full_run"]["run"]["skipped"] == "--skip full_run"


def test_missing_data_is_one_line(gpu_check, tmp_path, capsys):
    missing = tmp_path / "cifar10-jpeg.tar.gz"
    assert gpu_check.main(["--tiny", "--data", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert "not found" in report["environment"]["setup_error"]

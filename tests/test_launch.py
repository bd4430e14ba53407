"""Studies as jobs: plans (--dry-run), the local executor, Slurm submission (a stand-in sbatch), job states."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import cli_args, run_cli, tiny_config
from rewind import launch
from rewind.studies import common, imp
from rewind.archive import run as runs
from rewind.launch import records, submit
from rewind.train.trunk import train

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = ["--steps", "60it", "--save-every", "20it", "--eval-every", "60it", "--levels", "1"]


def tiny_imp(tmp_path, *extra: str, out: str = "study") -> list[str]:
    return ["imp", *cli_args(data_dir=str(tmp_path / "cache")), *STUDY, "--out", str(tmp_path / out), *extra]


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    code, out, err = run_cli(tiny_imp(tmp_path, "--rewind-iter", "0,20", "--control", "random-reinit",
                                      "--dry-run"), capsys)
    assert code == 0, err
    assert not (tmp_path / "study").exists() and not (tmp_path / "cache").exists()
    lines = out.splitlines()
    assert lines[0] == f"plan: 5 runs in {tmp_path / 'study'}"
    assert "trunk, resnet8 on synthetic, 60 it (1ep28it, 32 it/epoch)" in out and "checkpoints also at 0, 20" in out
    assert "imp-k20-random-reinit: IMP branch random-reinit, rewind to k=20, 1 levels of 40 it (1ep8it)" in out
    assert "[to run; after trunk, imp-k20]" in out  # a control waits for the plain branch whose masks it reuses


def test_dry_run_of_the_headline_command_needs_no_data(tmp_path, capsys):
    """`rewind imp --rewind-iter 500 --pretrain blur` as written, on the full recipe's defaults."""
    code, out, err = run_cli(["imp", "--rewind-iter", "500", "--pretrain", "blur", "--data-dir", str(tmp_path / "none"),
                              "--out", str(tmp_path / "r20"), "--dry-run"], capsys)
    assert code == 0, err
    assert out.startswith("pretrain blur: 40ep (blur's default")
    assert "after blur pre-training of 15640 it (40ep) that takes the schedule's first 15640 it" in out
    assert "checkpoints also at 500" in out and "20 levels of 46420 it" in out
    assert not (tmp_path / "none").exists() and not (tmp_path / "r20").exists()


SBATCH_HELP = "".join(f"      --{o}=value\n" for o in (
    "account", "array", "cpus-per-task", "comment", "constraint", "dependency", "error", "exclude", "gpus-per-node",
    "gres", "job-name", "kill-on-invalid-dep", "mem", "nodes", "ntasks-per-node", "open-mode", "output", "partition",
    "qos", "requeue", "signal", "time", "wckey"))


def _fake_sbatch(tmp_path, monkeypatch):
    """Stand-ins on PATH: an `sbatch` that keeps each submission file, answers as Slurm does and puts
    the job in a queue file (`queue`, one `squeue -O JobArrayID:|,State:|,Reason:|,RestartCnt:|` line
    per job) that the stand-in `squeue` prints; `scancel` logs what it cancels."""
    bin_dir, seen = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    seen.mkdir()
    queue = tmp_path / "queue"
    queue.write_text("")
    (bin_dir / "help.txt").write_text(SBATCH_HELP)
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
if [ "$1" = "--help" ]; then cat {bin_dir}/help.txt; exit 0; fi
id=$(( $(ls {seen} | wc -l) + 100 ))
cp "$1" {seen}/$id.sh
last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' "$1")
if [ -n "$last" ]; then
  i=0; while [ $i -le $last ]; do echo "${{id}}_$i|PENDING|None|0|" >> {queue}; i=$((i + 1)); done
else echo "$id|PENDING|None|0|" >> {queue}; fi
echo "Submitted batch job $id"
""")
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {queue}\n")
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'cancelled'}\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexec \"$@\"\n")  # what the job scripts start their task with
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho 'gpu*|8|64000|gpu:2'\n")  # a partition: 8 CPUs, 64 GB, 2 GPUs
    for tool in ("sbatch", "squeue", "scancel", "srun", "sacct", "sinfo"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("REWIND_TMP_IS_SHARED", "1")  # the tests' folders live in /tmp
    return seen


def test_slurm_submits_arrays_chained_afterok_and_never_twice(tmp_path, capsys, monkeypatch):
    seen = _fake_sbatch(tmp_path, monkeypatch)
    args = tiny_imp(tmp_path, "--rewind-iter", "0,20", "--replicates", "2", "--executor", "slurm",
                    "--partition", "gpu", "--time-limit", "30", "--sbatch", "account=lab,qos=high")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    files = sorted(seen.iterdir())
    # The trunks as one array, then each replicate's branches as an array waiting for its own trunk only.
    assert [f.name for f in files] == ["100.sh", "101.sh", "102.sh"]
    trunks, rep0, rep1 = (f.read_text() for f in files)
    assert "#SBATCH --array=0-1%2" in trunks and "dependency" not in trunks
    assert "#SBATCH --array=0-1%2" in rep0 and "#SBATCH --dependency=afterok:100_0\n" in rep0
    assert "#SBATCH --dependency=afterok:100_1\n" in rep1
    assert all(f"#SBATCH --{o}" in trunks for o in ("partition=gpu", "time=30", "account=lab", "qos=high",
                                                    "kill-on-invalid-dep=yes", "requeue\n", "signal=USR2@60"))
    # --device auto on a partition with GPUs: one GPU, 8 CPUs, 32 GB (the node has 64)
    assert all(f"#SBATCH --{o}\n" in trunks for o in ("gpus-per-node=1", "cpus-per-task=8", "mem=32GB"))
    assert "submitted 2 jobs (100)" in out and "submitted 2 jobs (101) after afterok:100_0: rep-00/imp-k0, " \
        "rep-00/imp-k20" in out and "submitted 2 jobs (102) after afterok:100_1" in out
    # Nothing runs yet: the same command submits nothing more.
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "nothing to submit: 6 runs are queued or running" in out and len(list(seen.iterdir())) == 3
    code, out, _ = run_cli(["runs", "show", str(tmp_path / "study")], capsys)
    assert out.splitlines()[0] == f"study {tmp_path / 'study'}: 6 queued"
    assert "rep-01/imp-k20  queued  102_1" in out
    code, _, err = run_cli(["runs", "summarize", str(tmp_path / "study")], capsys)
    assert code == 2 and "6 runs of" in err and "are not complete yet (rep-00/trunk, rep-00/imp-k0" in err


def test_a_failed_job_is_shown_with_its_last_line_and_resubmitted_alone(tmp_path, capsys, monkeypatch):
    seen = _fake_sbatch(tmp_path, monkeypatch)
    args = tiny_imp(tmp_path, "--rewind-iter", "20", "--executor", "slurm")
    assert run_cli(args, capsys)[0] == 0
    plan = launch.latest_plan(tmp_path / "study")
    with pytest.raises(Exception):  # the branch job run before its trunk: the job itself says why
        common.task()(str(plan.folder() / f"plan-{plan.key()}.json"), "imp-k20")
    state = records.state(plan, plan.job("imp-k20"))
    assert state.state == "failed" and "is not a rewind archive" in state.detail
    code, out, _ = run_cli(args, capsys)
    # The trunk is still queued: not sent again, and the resubmitted branch still waits for it; the
    # failed job, which the queue still lists, is cancelled first.
    assert code == 0 and "submitted 1 jobs (102) after afterok:100: imp-k20" in out
    assert (tmp_path / "cancelled").read_text() == "101\n"
    assert "#SBATCH --dependency=afterok:100\n" in (seen / "102.sh").read_text()


def test_a_local_job_whose_process_died_is_failed_and_sent_again(tmp_path):
    plan = imp.plan(tiny_config(rewind_iter="20"), out=tmp_path / "study")
    job = plan.job("imp-k20")
    records.record(plan, [(job, {"executor": "local", "job_id": "1", "driver_pid": os.getpid(),
                                 "host": os.uname().nodename, "stderr": str(tmp_path / "job.err")})])
    assert records.state(plan, job).state == "queued"  # its launcher (this process) is alive
    (tmp_path / "job.err").write_text("loading\nRuntimeError: CUDA out of memory\n")
    records.mark(plan, job, "running")
    state_file = plan.folder() / "state" / f"{job.key}.json"
    dead = json.loads(state_file.read_text())
    dead["pid"] = 2 ** 22 + 1  # no such process (a job killed with SIGKILL writes nothing more)
    state_file.write_text(json.dumps(dead))
    assert records.state(plan, job) == records.State("failed", "RuntimeError: CUDA out of memory", 1)
    assert [j.name for j in submit.to_submit(plan)] == ["trunk", "imp-k20"]


@pytest.mark.parametrize("said, expected", [
    ("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
     "sbatch refused the jobs: Batch job submission failed: Invalid account or account/partition combination "
     "specified; check --sbatch account="),
    ("sbatch: error: Invalid generic resource (gres) specification",
     "Invalid generic resource (gres) specification; the partition has no such GPUs: --gpus-per-job 0"),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "Slurm's controller does not answer (sbatch: Batch job submission failed: Unable to contact slurm controller"),
])
def test_what_sbatch_refuses_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, said, expected):
    seen = _fake_sbatch(tmp_path, monkeypatch)
    (tmp_path / "bin" / "sbatch").write_text(f"#!/bin/sh\necho '{said}' >&2\nexit 1\n")
    code, _, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm"), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not list(seen.iterdir()) and not (tmp_path / "study").exists()  # no plan, no pickle left behind


def test_settings_slurm_cannot_meet_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    seen = _fake_sbatch(tmp_path, monkeypatch)
    for extra, expected in ((["--partition", "gpux"], "--partition gpux: this cluster has no such partition (it "
                                                      "has gpu; `sinfo` lists them)"),
                            (["--sbatch", "acount=lab"], "--sbatch acount=lab: sbatch here has no option --acount"),
                            (["--time-limit", "2"], "--time-limit 2 is too short: Slurm signals a job 60 to 120 s "
                                                    "before its time limit"),
                            (["--device", "cuda", "--gpus-per-job", "0"], "--device cuda needs a GPU per job")):
        code, _, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm", *extra), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
        assert not list(seen.iterdir()) and not (tmp_path / "study").exists()


def test_no_slurm_here_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm"), capsys)
    assert code == 2 and "sbatch and srun are not on PATH" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()


def test_a_study_folder_the_nodes_cannot_see_is_refused(tmp_path, capsys, monkeypatch):
    _fake_sbatch(tmp_path, monkeypatch)
    monkeypatch.delenv("REWIND_TMP_IS_SHARED")
    code, _, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm"), capsys)
    assert code == 2 and "which the cluster's nodes cannot see" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()
    assert submit._filesystem(Path("/dev/shm/x")) in ("tmpfs", "")  # memory-backed where it is mounted


def test_bad_launch_settings_are_refused(tmp_path, capsys):
    code, _, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm", "--sbatch", "account"), capsys)
    assert code == 2 and "bad sbatch parameter 'account'" in err and not (tmp_path / "study").exists()
    code, _, err = run_cli(tiny_imp(tmp_path, "--executor", "slurm", "--time-limit", "0"), capsys)
    assert code == 2 and "time_limit must be a whole number >= 1" in err


def _same_checkpoints(a, b) -> int:
    """Every checkpoint under archive `a` equals the one at the same place under `b`; returns how many."""
    from safetensors.torch import load_file

    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors") if "launch" not in p.parts)
    for rel in files:
        x, y = load_file(a / rel), load_file(b / rel)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), rel
    return len(files)


def test_local_jobs_train_what_inline_trains(tmp_path, capsys, monkeypatch):
    """A trunk and two branches of two levels, each a process of its own, bit-identical to the inline
    run of the same command; the summary is written by the last job."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' thread count: this test's (bit-equal results need it)
    command = tiny_imp(tmp_path, "--rewind-iter", "0,20", "--levels", "2")
    code, out, err = run_cli([*command, "--executor", "local", "--local-jobs", "2"], capsys)
    assert code == 0, err
    assert "trunk: complete" in out and "imp-k0: complete" in out and "imp-k20: complete" in out
    study = tmp_path / "study"
    assert len(pd.read_csv(study / "trunk" / "analysis" / "imp_results.csv")) == 6  # 2 branches x levels 0-2
    manifest = runs.read(study).manifest.data
    assert manifest["command"].startswith("rewind imp")  # the study's command, not submitit's
    assert manifest["job"].endswith("#trunk") and manifest["job"].startswith(str(study / "launch" / "plan-"))
    code, out, _ = run_cli([*command, "--executor", "local"], capsys)
    assert code == 0 and f"every run of {study} is complete" in out
    code, out, _ = run_cli(["runs", "show", str(study)], capsys)
    assert out.splitlines()[0] == f"study {study}: 3 complete"
    plan = launch.latest_plan(study)
    assert json.loads((study / "launch" / "jobs.json").read_text())[plan.job("imp-k20").key]["executor"] == "local"
    inline = tmp_path / "inline"
    code, _, err = run_cli(tiny_imp(tmp_path, "--rewind-iter", "0,20", "--levels", "2", out="inline"), capsys)
    assert code == 0, err
    assert _same_checkpoints(study, inline) > 10


def test_a_preempted_job_is_requeued_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Slurm's way: the preemption signal, submitit's checkpoint and requeue, the run resumed from its archive."""
    import submitit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = tiny_config(data_dir=str(tmp_path / "cache"), steps="160it", save_every="20it", eval_every="160it")
    plan = imp.trunk_plan(config, tmp_path / "t")
    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=60)
    job = executor.submit(common.task(), str(plan.save()), "trunk")
    manifest = tmp_path / "t" / "manifest.json"
    # Preempted early (3 of its 9 checkpoints saved), so that it cannot finish before the signal lands.
    while not (manifest.exists() and len(runs.read(tmp_path / "t").stage("trunk").steps()) >= 3):
        assert not job.done(), job.stderr()
        time.sleep(0.05)
    worker_pid = json.loads((plan.folder() / "state" / f"{plan.jobs[0].key}.json").read_text())["pid"]
    os.kill(worker_pid, signal.SIGUSR2)  # what Slurm sends the task before it preempts the job
    deadline = time.time() + 300
    while not launch.done(plan.jobs[0]):  # the requeued job (submitit's local executor restarts it) ends it
        assert time.time() < deadline, job.stdout()
        time.sleep(0.2)
    state = json.loads((plan.folder() / "state" / f"{plan.jobs[0].key}.json").read_text())
    assert state["attempt"] == 2 and state["state"] == "finished"
    train(config, tmp_path / "inline")
    assert _same_checkpoints(tmp_path / "t", tmp_path / "inline") > 10


def test_waves_put_every_job_after_those_it_waits_for(tmp_path):
    config = tiny_config(rewind_iter="0,20", control="random-reinit", steps="60it", replicates=2)
    plan = imp.plan(config, out=tmp_path / "s")
    waves = submit.waves(plan, list(plan.jobs))
    assert [[j.name for j in w] for w in waves] == [
        ["rep-00/trunk", "rep-01/trunk"],
        ["rep-00/imp-k0", "rep-00/imp-k20", "rep-01/imp-k0", "rep-01/imp-k20"],
        ["rep-00/imp-k0-random-reinit", "rep-00/imp-k20-random-reinit", "rep-01/imp-k0-random-reinit",
         "rep-01/imp-k20-random-reinit"]]
    # A trunk already complete is no dependency: its branches go out first.
    later = [j for j in plan.jobs if "trunk" not in j.name]
    assert [len(w) for w in submit.waves(plan, later)] == [4, 4]

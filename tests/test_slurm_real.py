"""Studies on a real single-node Slurm cluster (tests/slurm_cluster.py): the failure paths a shared
cluster produces every week, each ending bit-identical to the inline run of the same command.

Skipped, with the reason, where the cluster cannot run (not root, the packages missing and not
allowed to be installed: CI, or REWIND_SLURM_INSTALL=1, installs them). The stand-in `sbatch` tests
in test_launch.py and the state mapping in test_launch_states.py run everywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from conftest import cli_args, run_cli
from rewind import launch
from rewind.launch import files, records

pytestmark = pytest.mark.usefixtures("one_thread")

INSTALL_LOG = Path(os.environ.get("REWIND_SLURM_INSTALL_LOG", "/tmp/rewind-slurm-install.log"))
# The trunk (200 iterations, a checkpoint every 10: long enough to be requeued at its first checkpoints)
# and one IMP branch from k=120: seconds each.
STUDY = ["--steps", "200it", "--save-every", "10it", "--eval-every", "200it", "--lr-milestones", "100it",
         "--levels", "1", "--rewind-iter", "120"]
JOBS = ["--executor", "slurm", "--cpus-per-job", "1", "--mem-gb", "2", "--time-limit", "10"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, up for this module (its daemons stopped by their PIDs at the end), or a skip."""
    try:
        if INSTALL_LOG.exists() and slurm_cluster.missing_tools():  # CI installs in the background
            slurm_cluster.wait_for_install(INSTALL_LOG, timeout_s=300)
        if slurm_cluster.missing_tools() and (os.environ.get("CI") or os.environ.get("REWIND_SLURM_INSTALL") == "1"):
            slurm_cluster.install()
        c = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
        try:
            c.start()
        except slurm_cluster.Unavailable:
            c.stop()
            raise
    except slurm_cluster.Unavailable as e:
        pytest.skip(f"no Slurm test cluster here: {e}")
    yield c
    c.stop()


@pytest.fixture
def on_cluster(cluster, tmp_path, monkeypatch):
    for k, v in cluster.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REWIND_TMP_IS_SHARED", "1")  # one node: its /tmp is the cluster's
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' threads: this process's (bit-equal results need it)
    return cluster


def study(tmp_path, out: str, *extra: str) -> list[str]:
    return ["imp", *cli_args(data_dir=str(tmp_path / "cache")), *STUDY, "--out", str(tmp_path / out), *extra]


T0 = time.time()


def wait(what: str, ok, plan=None, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if value := ok():
            if log := os.environ.get("REWIND_SLURM_TIMES"):  # a file: where each wait ended
                with open(log, "a") as f:
                    f.write(f"{time.time() - T0:6.1f} s: {what}\n")
            return value
        time.sleep(0.2)
    rows = records.states(plan) if plan else []
    raise AssertionError(f"timed out waiting for {what}: {[(r['job'], r['state'], r['detail']) for r in rows]}")


def label(plan, name: str) -> str:
    return records.Table(plan).state(plan.job(name)).label()


def job_id(plan, name: str) -> str:
    return records.submitted(plan)[plan.job(name).key]["job_id"]


def progressed(plan, name: str, attempt: int) -> dict | None:
    """The job's own state once it runs attempt `attempt` and has saved a checkpoint in it."""
    job = plan.job(name)
    own = files.read_state(plan.out, job.key)
    ok = own.get("state") == "running" and own.get("attempt") == attempt and launch.progress(job) > own["progress"]
    return own if ok else None


def started(plan, name: str, attempt: int) -> bool:
    own = files.read_state(plan.out, plan.job(name).key)
    return own.get("state") == "running" and own.get("attempt") == attempt


def slurm_cmd(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


def same_checkpoints(a: Path, b: Path) -> int:
    from test_launch import _same_checkpoints

    return _same_checkpoints(a, b)


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    """The inline run of the study's command, what every recovered study must equal bit for bit: a
    process of its own (one thread, as the jobs), started first and waited for when compared."""
    tmp = tmp_path_factory.mktemp("inline")
    proc = subprocess.Popen([sys.executable, "-m", "rewind.cli", *study(tmp, "inline")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

    def done() -> Path:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        return tmp / "inline"

    yield done
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_cancelled_trunk_preemption_time_slots_and_a_killed_branch(on_cluster, inline, tmp_path, capsys):
    """With accounting: a cancelled trunk, its preemption and time slots. Then without (no slurmdbd,
    sacct fails): a branch killed with kill -9 is known failed by its own state file once it leaves
    the queue. Each time one run of the same command recovers; the end equals the inline run."""
    args = study(tmp_path, "study", *JOBS)
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    plan = launch.latest_plan(tmp_path / "study")
    # 1. The trunk is cancelled (before it starts) while its branch waits: one run of the same command
    # sends both again (the branch, whose dependency can never be met, cancelled first if Slurm has not).
    slurm_cmd("scancel", job_id(plan, "trunk"))
    wait("the trunk to fail", lambda: label(plan, "trunk") == "failed", plan)
    assert records.Table(plan).state(plan.job("trunk")).detail.startswith("Slurm: CANCELLED")
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    trunk_id = job_id(plan, "trunk")
    assert f"submitted 1 jobs ({trunk_id}): trunk" in out and f"after afterok:{trunk_id}: imp-k120" in out
    # 2. Its time slots end (Slurm's signal before the time limit): it requeues itself each time, past
    # submitit's 3 requeues with REWIND_SLURM_SLOTS=5. 3. Then it is preempted (scontrol requeue), and
    # finishes in its last slot, from its checkpoints.
    # Each signal lands while the attempt has most of its run ahead (the first after a checkpoint to
    # resume from, the others as soon as the attempt starts), so that none can finish before it.
    slots = int(os.environ.get("REWIND_SLURM_SLOTS", "3"))
    for attempt in range(1, slots):
        if attempt == 1:
            wait("a checkpoint of attempt 1", lambda: progressed(plan, "trunk", 1), plan)
        else:
            wait(f"attempt {attempt} to start", lambda: started(plan, "trunk", attempt), plan)
        if attempt < slots - 1:
            slurm_cmd("scancel", "--signal=USR2", trunk_id)
        else:
            slurm_cmd("scontrol", "requeue", trunk_id)
            wait("the preempted trunk", lambda: label(plan, "trunk") == f"requeued (attempt {slots})", plan)
    wait("the trunk to complete", lambda: label(plan, "trunk") == "complete", plan, timeout_s=180)
    assert files.read_state(plan.out, plan.job("trunk").key)["attempt"] == slots
    # 4. Accounting off; the branch's process is killed (kill -9): once it has left the queue, it is
    # failed by what it wrote itself; the same command sends it again, alone.
    on_cluster.stop_daemon("slurmctld")
    on_cluster.start_controller(accounting=False)
    try:
        r = subprocess.run(["sacct", "-j", trunk_id], capture_output=True, text=True)
        assert r.returncode == 1 and "accounting storage is disabled" in r.stderr
        own = wait("a checkpoint of the branch", lambda: progressed(plan, "imp-k120", 1), plan)
        os.kill(own["pid"], signal.SIGKILL)
        branch = job_id(plan, "imp-k120")
        wait("the branch to leave Slurm's memory", lambda: subprocess.run(
            ["squeue", "-h", "--states=all", "-j", branch], capture_output=True, text=True).stdout.strip() == "",
            timeout_s=60)
        state = records.Table(plan).state(plan.job("imp-k120"))
        assert state.state == "failed" and state.detail.startswith("its process ended without a word"), state
        code, out, err = run_cli(args, capsys)
        assert code == 0 and "submitted 1 jobs" in out and out.split("\n")[0].endswith(": imp-k120"), err
        wait("the study to complete", lambda: all(r["state"] == "complete" for r in records.states(plan)), plan)
    finally:
        on_cluster.stop_daemon("slurmctld")
        on_cluster.start_controller(accounting=True)
    wait("the summary", lambda: (tmp_path / "study" / "trunk" / "analysis" / "imp_results.csv").exists())
    code, out, _ = run_cli(["runs", "show", str(tmp_path / "study")], capsys)
    assert out.splitlines()[0] == f"study {tmp_path / 'study'}: 2 complete"
    assert same_checkpoints(tmp_path / "study", inline()) > 20


def test_refusals_are_one_line_and_leave_nothing(on_cluster, tmp_path, capsys):
    def refused(*extra: str) -> str:
        code, out, err = run_cli(study(tmp_path, "study", *JOBS, *extra), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not (tmp_path / "study").exists()
        return err

    assert "--partition nosuch: this cluster has no such partition (it has debug" in refused("--partition", "nosuch")
    assert "Invalid account" in refused("--sbatch", "account=nosuch")  # associations are enforced
    assert "sbatch here has no option --nosuch" in refused("--sbatch", "nosuch=1")
    assert "--time-limit 2 is too short" in refused("--time-limit", "2")
    # A job asking more than the node has pends forever: `runs show` says it is stuck, and why; the
    # command run again with what fits cancels it and sends it again.
    args = study(tmp_path, "study", *JOBS)
    assert run_cli([*args, "--cpus-per-job", "64"], capsys)[0] == 0
    plan = launch.latest_plan(tmp_path / "study")
    wait("the stuck trunk", lambda: label(plan, "trunk") == "stuck", plan)
    code, out, _ = run_cli(["runs", "show", str(tmp_path / "study")], capsys)
    assert out.splitlines()[0].endswith(": 2 stuck")  # the branch asks as much
    assert "Slurm: PartitionConfig (it asks for more than the partition's nodes have" in out
    stuck = job_id(plan, "trunk")
    code, out, err = run_cli(args, capsys)
    assert code == 0 and f"after afterok:{job_id(plan, 'trunk')}: imp-k120" in out, err
    assert job_id(plan, "trunk") != stuck
    slurm_cmd("scancel", job_id(plan, "trunk"), job_id(plan, "imp-k120"))
    # The controller is down: one line, nothing sent, nothing written.
    on_cluster.stop_daemon("slurmctld")
    try:
        code, _, err = run_cli(study(tmp_path, "other", *JOBS), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "controller does not answer" in err, err
        assert not (tmp_path / "other").exists()
        code, out, err = run_cli(["runs", "show", str(tmp_path / "study")], capsys)
        assert code == 0 and "unknown" in out and "controller does not answer" in out
    finally:
        on_cluster.start_controller()

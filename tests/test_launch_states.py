"""Job states from what Slurm says (recorded squeue and sacct outputs), what to send again and what it
waits for, the end of a time slot, and the launch folder's damaged files: fast, no cluster needed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import run_cli, tiny_config
from rewind import launch
from rewind.errors import UserError
from rewind.launch import files, records, slurm, submit
from rewind.launch.settings import LaunchConfig
from rewind.launch.slurm import Info
from rewind.studies import common, imp

# `squeue -h -r --states=all -O JobArrayID:|,State:|,Reason:|,RestartCnt:|` on Slurm 22.05 (a pending
# array not yet split is printed as a range even with -r).
SQUEUE = """\
41|RUNNING|None|0|
42|PENDING|BeginTime|2|
43_[2-3%2]|PENDING|Dependency|0|
43_0|PENDING|DependencyNeverSatisfied|0|
43_1|PENDING|ReqNodeNotAvail, UnavailableNodes:node7|0|
44|COMPLETING|None|1|
45|FAILED|NonZeroExitCode|0|
"""
# `sacct -X -n -P -o JobID,State,Reason`
SACCT = """\
46|COMPLETED|None
46.batch|COMPLETED|
47|CANCELLED by 0|Dependency
48_[0-1]|CANCELLED by 0|None
49|TIMEOUT|None
"""


def test_squeue_and_sacct_are_read_per_job_and_array_task():
    q = slurm.parse_squeue(SQUEUE)
    assert q["41"] == Info("RUNNING", "None", 0) and q["42"] == Info("PENDING", "BeginTime", 2)
    assert q["43_2"] == q["43_3"] == Info("PENDING", "Dependency", 0)
    assert q["43_1"].reason == "ReqNodeNotAvail, UnavailableNodes:node7"
    a = slurm.parse_sacct(SACCT)
    assert a["47"] == Info("CANCELLED", "Dependency") and a["48_0"] == a["48_1"] == Info("CANCELLED", "None")
    assert set(a) == {"46", "47", "48_0", "48_1", "49"}  # job steps (46.batch) are not jobs


@pytest.mark.parametrize("reason, stuck", [
    ("DependencyNeverSatisfied", True), ("PartitionConfig", True), ("ReqNodeNotAvail, UnavailableNodes:n1", True),
    ("QOSMaxWallDurationPerJobLimit", True), ("AssocMaxCpuPerJobLimit", True), ("InvalidAccount", True),
    ("Dependency", False), ("Priority", False), ("Resources", False), ("BeginTime", False),
    ("QOSMaxJobsPerUserLimit", False), ("AssocGrpCpuLimit", False), ("JobArrayTaskLimit", False)])
def test_reasons_that_never_clear_are_stuck(reason, stuck):
    assert bool(slurm.stuck_reason(reason)) == stuck


RUNNING_1 = {"state": "running", "attempt": 1, "pid": 1, "host": "n"}


@pytest.mark.parametrize("info, own, label, detail", [
    (Info("PENDING", "Priority"), {}, "queued", "waits (Priority)"),
    (Info("PENDING", "Dependency"), {}, "queued", "waits (Dependency)"),
    (Info("RUNNING"), RUNNING_1, "running", "logs:"),
    (Info("RUNNING", restarts=1), RUNNING_1, "running (attempt 2)", "logs:"),  # started again, not yet written
    (Info("RUNNING", restarts=2), {**RUNNING_1, "attempt": 3}, "running (attempt 3)", "logs:"),
    (Info("COMPLETING", restarts=1), RUNNING_1, "requeued (attempt 2)", "its last attempt is ending"),
    (Info("PENDING", "BeginTime", 1), RUNNING_1, "requeued (attempt 2)", "waits to start again (BeginTime)"),
    (Info("REQUEUED", "None", 4), {**RUNNING_1, "attempt": 4}, "requeued (attempt 5)", "waits to start again"),
    (Info("PENDING", "DependencyNeverSatisfied"), {}, "stuck", "Slurm: DependencyNeverSatisfied (a run it waits "
                                                                "for failed or was cancelled)"),
    (Info("PENDING", "PartitionConfig"), {}, "stuck", "Slurm: PartitionConfig (it asks for more than the "
                                                       "partition's nodes have"),
    (Info("CANCELLED", "Dependency"), {}, "failed", "cancelled: a run it waits for did not complete"),
    (Info("CANCELLED", "None"), RUNNING_1, "failed", "Slurm: CANCELLED; OSError: boom"),
    (Info("TIMEOUT"), RUNNING_1, "failed", "Slurm: TIMEOUT; OSError: boom"),
    (Info("OUT_OF_MEMORY"), RUNNING_1, "failed", "Slurm: OUT_OF_MEMORY"),
    (Info("COMPLETED"), {**RUNNING_1, "state": "finished"}, "failed", "OSError: boom"),
    (Info("RUNNING"), {**RUNNING_1, "state": "failed", "last_line": "bad trunk"}, "failed", "bad trunk"),
    # Gone from the queue, no accounting: what the job wrote itself says how it ended.
    (None, RUNNING_1, "failed", "its process ended without a word (killed, or its node failed); OSError: boom"),
    (None, {**RUNNING_1, "state": "finished"}, "failed", "the job ended without completing its run"),
    (None, {}, "failed", "the job left the queue without starting (cancelled?)"),
])
def test_a_slurm_job_state_from_what_slurm_and_the_job_say(tmp_path, info, own, label, detail):
    log = tmp_path / "job.err"
    log.write_text("starting\nOSError: boom\n")
    state = records.from_slurm(info, own, str(log))
    assert state.label() == label and state.detail.startswith(detail), state


@pytest.fixture
def reps(tmp_path):
    """An IMP plan with two replicates (a trunk and two branches each), as Slurm jobs 10 (trunks) and 11, 12."""
    plan = imp.plan(tiny_config(rewind_iter="0,20", replicates=2), out=tmp_path / "study")
    ids = {"rep-00/trunk": "10_0", "rep-01/trunk": "10_1", "rep-00/imp-k0": "11_0", "rep-00/imp-k20": "11_1",
           "rep-01/imp-k0": "12_0", "rep-01/imp-k20": "12_1"}
    records.record(plan, [(plan.job(n), {"executor": "slurm", "job_id": i}) for n, i in ids.items()])
    return plan


def table(plan, infos: dict[str, Info]) -> records.Table:
    return records.Table(plan, query=lambda ids: {i: infos[i] for i in ids if i in infos})


def test_a_failed_trunk_is_sent_again_with_the_branches_that_wait_for_it(reps):
    t = table(reps, {"10_0": Info("FAILED"), "10_1": Info("RUNNING"), "11_0": Info("PENDING", "Dependency"),
                     "11_1": Info("PENDING", "DependencyNeverSatisfied"), "12_0": Info("PENDING", "Dependency"),
                     "12_1": Info("PENDING", "Dependency")})
    jobs, cancel = submit.sends(reps, t)
    assert [j.name for j in jobs] == ["rep-00/trunk", "rep-00/imp-k0", "rep-00/imp-k20"]
    assert cancel == ["11_0", "11_1"]  # still in the queue: cancelled before they are sent again
    # Each branch waits for its own trunk: the one sent now, or the one still running.
    ids = {"rep-00/trunk": "20", "rep-01/trunk": "10_1"}
    assert submit.dependencies(reps.job("rep-00/imp-k20"), ids) == ("20",)
    assert submit.dependencies(reps.job("rep-01/imp-k20"), ids) == ("10_1",)
    waves = submit.waves(reps, jobs)
    assert [[j.name for j in w] for w in waves] == [["rep-00/trunk"], ["rep-00/imp-k0", "rep-00/imp-k20"]]
    assert [(d, len(g)) for d, g in submit.arrays(waves[1], ids)] == [(("20",), 2)]


def test_queued_and_requeued_jobs_are_left_alone_and_an_unreachable_controller_is_said(reps):
    t = table(reps, {"10_0": Info("PENDING", "BeginTime", 1), "10_1": Info("RUNNING"),
                     **{i: Info("PENDING", "Dependency") for i in ("11_0", "11_1", "12_0", "12_1")}})
    assert submit.sends(reps, t) == ([], [])

    def down(ids):
        raise slurm.Unreachable("Slurm's controller does not answer (slurm_load_jobs error: Unable to contact "
                                "slurm controller (connect failure)); run the command again")

    with pytest.raises(slurm.Unreachable):
        records.Table(reps, strict=True, query=down)
    state = records.Table(reps, query=down).state(reps.job("rep-00/trunk"))
    assert state.state == "unknown" and "Unable to contact slurm controller" in state.detail


def test_records_are_keyed_by_what_a_job_writes_not_its_name(tmp_path):
    """Two studies in one folder whose jobs share a name (stability at k=20 under both noises: the
    children of each live in a branch of their own)."""
    a, b = (launch.Plan("rewind.studies.stability", str(tmp_path), {}, (launch.Job(
        "stability-k20", str(tmp_path / "branches" / f"stability-k20-{h}"), "two children"),)) for h in ("aa", "bb"))
    assert a.jobs[0].key != b.jobs[0].key
    records.record(a, [(a.jobs[0], {"executor": "slurm", "job_id": "7"})])
    records.mark(a, a.jobs[0], "running")
    assert records.Table(a, query=lambda ids: {"7": Info("RUNNING")}).state(a.jobs[0]).state == "running"
    assert records.Table(b, query=lambda ids: {}).state(b.jobs[0]).state == "never submitted"


def test_a_time_slot_that_saved_no_checkpoint_ends_the_job(tmp_path, monkeypatch):
    plan = imp.trunk_plan(tiny_config(), tmp_path / "t")
    plan_file = str(plan.save())
    job = plan.jobs[0]
    (tmp_path / "t" / "trunk" / "checkpoints").mkdir(parents=True)
    (tmp_path / "t" / "trunk" / "checkpoints" / "it00000000.safetensors").write_bytes(b"")
    limit = 240 * 60  # the default --time-limit
    for started, progress, requeued in ((time.time() - limit, 1, False),  # the slot ended, nothing new saved
                                        (time.time() - limit, 0, True),   # the slot saved a checkpoint
                                        (time.time() - 60, 1, True)):     # preempted early: always requeued
        records.mark(plan, job, "running", started=started, progress=progress)
        again = common.task().checkpoint(plan_file, "trunk")
        assert (again is not None) == requeued
        own = files.read_state(plan.out, job.key)
        assert (own["state"] == "failed") != requeued
        if not requeued:
            assert own["last_line"].startswith("no checkpoint was saved in a whole time slot of --time-limit 240 min")


def test_node_sizes_sbatch_options_and_refusals_are_read_from_slurm_text():
    parts = slurm.parse_sinfo("cpu*|64|256000|(null)\ngpu|32|500000+|gpu:a100:4(S:0-1)\ngpu|16|128000|gpu:2\n")
    assert parts[""] == parts["cpu"] == slurm.Nodes(64, 256000, 0) and parts["gpu"] == slurm.Nodes(32, 500000, 4)
    assert {"account", "kill-on-invalid-dep"} <= slurm.parse_options(
        "  -A, --account=name          charge job to specified account\n"
        "      --kill-on-invalid-dep=<yes|no> terminate job if invalid dependency\n")
    assert slurm.refusal("sbatch: error: invalid partition specified: x\nsbatch: error: Batch job submission "
                         "failed: Invalid partition name specified\n") == "invalid partition specified: x"
    assert slurm.refusal("sbatch: unrecognized option '--x=1'\nTry \"sbatch --help\" for more information\n") \
        == "unrecognized option '--x=1'"


def test_resources_fit_the_run_and_the_partition():
    plan = imp.trunk_plan(tiny_config(), "/x")
    cpu_plan = imp.trunk_plan(tiny_config(device="cpu"), "/x")
    small, gpus = slurm.Nodes(2, 4000, 0), slurm.Nodes(64, 500000, 8)
    given = LaunchConfig(gpus_per_job=2, cpus_per_job=3, mem_gb=5)
    assert submit.resources(plan, LaunchConfig(), small) == {"gpus_per_node": 0, "cpus_per_task": 2,
                                                                 "mem_gb": 4000 / 1024}
    assert submit.resources(plan, LaunchConfig(), gpus) == {"gpus_per_node": 1, "cpus_per_task": 8,
                                                                "mem_gb": 32}
    assert submit.resources(cpu_plan, LaunchConfig(), gpus)["gpus_per_node"] == 0  # --device cpu
    assert submit.resources(plan, LaunchConfig(), None)["gpus_per_node"] == 1  # sinfo silent: the default
    assert submit.resources(plan, given, gpus) == {"gpus_per_node": 2, "cpus_per_task": 3, "mem_gb": 5}


# --- the launch folder's damaged files (issue 21): one line, exit 2; the study's command rewrites them --------

DAMAGE = {
    "not JSON": lambda p: p.write_text(p.read_text()[:9]),  # cut short (a full disk, a crashed write)
    "a list": lambda p: p.write_text("[]"),
    "wrong types": lambda p: p.write_text(json.dumps({k: 3 for k in json.loads(p.read_text())})),
}
KINDS = {
    "study.json": lambda s: s / "launch" / "study.json",
    "plan": lambda s: next((s / "launch").glob("plan-*.json")),
    "jobs.json": lambda s: s / "launch" / "jobs.json",
    "state file": lambda s: next((s / "launch" / "state").glob("*.json")),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_damaged_launch_file_is_one_line_and_the_command_rewrites_it(tmp_path, capsys, monkeypatch, kind, damage):
    from test_launch import _fake_sbatch, tiny_imp

    _fake_sbatch(tmp_path, monkeypatch)
    args = tiny_imp(tmp_path, "--rewind-iter", "20", "--executor", "slurm")
    assert run_cli(args, capsys)[0] == 0
    study = tmp_path / "study"
    plan = launch.latest_plan(study)
    records.mark(plan, plan.jobs[0], "running", started=time.time(), progress=0)  # the trunk has started
    path = KINDS[kind](study)
    DAMAGE[damage](path)
    readers = [["runs", "show", str(study)]] + ([["runs", "summarize", str(study)]] if kind in ("plan", "study.json")
                                                else [])  # summarize reads the plan and the archive alone
    for command in readers:
        code, _, err = run_cli(command, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert path.name in err and "run the study's command again to rewrite it" in err, err
    code, out, err = run_cli(args, capsys)  # sets it aside and writes it anew
    assert code == 0 and "Traceback" not in err, err
    assert f"{path} " in out and f"set aside as {path.name}.damaged" in out, out
    assert (path.parent / f"{path.name}.damaged").exists()
    code, out, err = run_cli(["runs", "show", str(study)], capsys)
    assert code == 0 and out.startswith(f"study {study}:"), err
    assert launch.latest_plan(study).jobs == plan.jobs


def test_a_plan_of_the_wrong_shape_is_refused_naming_what_is_wrong(tmp_path):
    path = tmp_path / "launch" / "plan-x.json"
    path.parent.mkdir()
    good = imp.trunk_plan(tiny_config(), tmp_path).to_dict()
    for bad, words in (({**good, "study": "os"}, "names no study of rewind ('os')"),
                       ({**good, "jobs": [{**good["jobs"][0], "after": "trunk"}]}, "has 'after' = \"trunk\", not a "
                                                                                  "list of str"),
                       ({**good, "jobs": [{**good["jobs"][0], "after": ["nosuch"]}]}, "wait for jobs it does not hold"),
                       ({k: v for k, v in good.items() if k != "jobs"}, "lacks 'jobs'")):
        path.write_text(json.dumps(bad))
        with pytest.raises(UserError, match="run the study's command again") as e:
            files.read_plan(path)
        assert words in str(e.value) and str(path) in str(e.value)


def test_a_plan_read_back_is_the_plan_written(tmp_path):
    """Every job reads the plan back by its hash: a field lost on the way (the trunks a branch reopens,
    its `expect`) would make the plan file the job is sent with one that does not exist."""
    plan = imp.plan(tiny_config(rewind_iter="0,20"), out=tmp_path / "study")
    assert any(j.expect for j in plan.jobs)
    path = plan.save()
    back = files.read_plan(path)
    assert back == plan and path.name == f"plan-{back.key()}.json"
    bad = json.loads(path.read_text())
    bad["jobs"][-1]["expect"] = [["only a folder"]]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="whose 'expect' is not"):
        files.read_plan(path)


def test_the_last_job_waits_for_a_run_still_held_by_another_before_it_summarizes(tmp_path, monkeypatch):
    """Two jobs finish together: the one that summarizes waits for the other to let go of its run's
    lock (it has marked its run complete, and is closing it) instead of failing on it."""
    import threading

    from rewind.archive.lock import FolderLock

    folders = [tmp_path / "a", tmp_path / "b"]
    plan = launch.Plan("rewind.studies.linear", str(tmp_path), {}, tuple(
        launch.Job(f.name, str(f), "x", marker=str(f / "done")) for f in folders))
    for f in folders:
        f.mkdir()
        (f / "done").write_text("{}")
    summarized = []
    monkeypatch.setattr("rewind.studies.linear.summarize", lambda p: summarized.append(time.time()))
    held = FolderLock(folders[1]).acquire()
    threading.Timer(0.5, held.release).start()
    start = time.time()
    assert common.summarize_if_last(plan) and summarized[0] - start >= 0.4


def test_stats_is_complete_by_a_marker_of_its_own_per_settings(tmp_path):
    from test_readme import _stand_in_trunk

    from rewind.studies.stats import plan as stats_plan

    _stand_in_trunk(tmp_path / "t")
    (tmp_path / "t" / "trunk" / "analysis").mkdir()
    (tmp_path / "t" / "trunk" / "analysis" / "early_phase.csv").write_text("step\n0\n")  # another run's report
    a, b = stats_plan(tmp_path / "t"), stats_plan(tmp_path / "t", {"device": "cpu"})
    assert [j.name for j in launch.pending(a)] == ["stats"] and a.jobs[0].key != b.jobs[0].key
    marker = Path(a.jobs[0].marker)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("{}")  # what the job writes when it ends
    assert launch.pending(a) == [] and [j.name for j in launch.pending(b)] == ["stats"]

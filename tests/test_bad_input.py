"""Every damaged file (issue 21): one line on stderr saying what is wrong and how to recover, exit
status 2, no traceback, and every file saved before byte-identical afterwards.

One row per case: a row copies a small archive made once per module (a trunk with an IMP branch and a
stability branch, an interrupted trunk, a warm-start study, a deep-linear study), damages it and runs
a command on it. Impossible settings and the messages themselves: test_refused_settings.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from conftest import check, cli_args, file_states, run_cli, run_ok

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only waits

TINY = dict(source="synthetic", train_examples=200, test_examples=100, model="resnet8", width=4, steps="30it",
            batch_size=32, lr=0.05, lr_milestones="", eval_every="20it", log_every="10it", save_every="20it",
            stats_every="0", progress="none")
WARM = ["--study", "length", "--steps", "10it", "--second-steps", "10it"]  # a first phase, warm and scratch arms
LINEAR = ["linear", "pathways", "--depth", "2", "--deficit-start", "0", "--deficit-length", "10", "--steps", "40",
          "--width", "8", "--record-every", "10", "--threads", "1", "--progress", "none", "--no-figures"]


def tiny(cache: Path, **overrides) -> list[str]:
    return cli_args(**{**TINY, "data_dir": str(cache), **overrides})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The archives the rows damage (copies of them)."""
    base = tmp_path_factory.mktemp("made")
    cache = base / "cache"
    run_ok(["train", "--out", str(base / "trunk"), *tiny(cache)])
    run_ok(["imp", "--from", str(base / "trunk"), "--levels", "1", "--rewind-iter", "25", "--data-dir", str(cache)])
    run_ok(["stability", str(base / "trunk"), "--at", "25", "--points", "2", "--bn", "interpolate",
        "--data-dir", str(cache), "--progress", "none"])
    run_ok(["warm-start", "--out", str(base / "ws"), *tiny(cache), *WARM])
    run_ok([*LINEAR, "--out", str(base / "lin")])
    interrupted(base / "trunk", base / "cut")
    return base, cache


def interrupted(trunk: Path, out: Path) -> None:
    """A copy of the trunk as a kill before its last checkpoint leaves it: running, last checkpoint 25."""
    shutil.copytree(trunk, out, ignore=shutil.ignore_patterns("branches"))
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("it00000030.safetensors", "it00000030.state.pt"):
        (out / "trunk" / "checkpoints" / name).unlink()
        del manifest["files"][f"trunk/checkpoints/{name}"]
    del manifest["files"]["trunk/metrics.csv"], manifest["final_test"], manifest["best_test_acc"]
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))


# --- damage done to a run folder ------------------------------------------------------------------------

def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def cut(path: Path, keep_lines: int | None = None, keep_bytes: int | None = None) -> None:
    """The file cut short: to its first `keep_lines` lines (whole lines), or `keep_bytes` bytes."""
    text = path.read_bytes()
    path.write_bytes(b"".join(text.splitlines(keepends=True)[:keep_lines]) if keep_lines is not None
                     else text[:keep_bytes])


def flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def resealed(root: Path, rel: str, blob: bytes) -> None:
    """Write `blob` at `rel` and record its sha256 in the manifest: damage that the hash cannot see."""
    (root / rel).write_bytes(blob)
    edit_json(root / "manifest.json", lambda m: {**m, "files": {**m["files"], rel: hashlib.sha256(blob).hexdigest()}})


def state_blob(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def one(pattern: str, root: Path) -> Path:
    (found,) = root.glob(pattern)
    return found


CKPT = "trunk/checkpoints/it{:08d}.{}"

# (id, archive copied, damage(root), command(root, cache), exit status, a word of the one line)
DAMAGE = [
    ("manifest-a-list", "trunk", lambda r: (r / "manifest.json").write_text("[1, 2]"),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "JSON list"),
    ("manifest-config-a-string", "trunk", lambda r: edit_json(r / "manifest.json", lambda m: {**m, "config": "oops"}),
     lambda r, c: ["runs", "show", str(r)], 2, "'config'"),
    ("manifest-empty-object", "trunk", lambda r: (r / "manifest.json").write_text("{}"),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "lacks schema_version"),
    ("manifest-not-json", "trunk", lambda r: (r / "manifest.json").write_bytes(b"\x00garbage"),
     lambda r, c: ["imp", "--from", str(r), "--levels", "1", "--data-dir", str(c)], 2, "not valid JSON"),
    ("manifest-files-a-list", "trunk", lambda r: edit_json(r / "manifest.json", lambda m: {**m, "files": []}),
     lambda r, c: ["stability", str(r), "--at", "25", "--data-dir", str(c)], 2, "'files'"),
    ("manifest-complete-without-result", "trunk", lambda r: edit_json(
        r / "manifest.json", lambda m: {k: v for k, v in m.items() if k != "final_test"}),
     lambda r, c: ["imp", "--from", str(r), "--levels", "1", "--data-dir", str(c)], 2, "lacks final_test"),
    ("branch-manifest-damaged", "trunk", lambda r: (one("branches/imp-*", r) / "manifest.json").write_text('"x"'),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "manifest.json is damaged"),
    ("metrics-garbage-on-resume", "trunk", lambda r: (r / "trunk/metrics.csv").write_text("\x00\x01 garbage\nx\n"),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "metrics.csv"),
    ("metrics-empty-in-stats", "trunk", lambda r: (r / "trunk/metrics.csv").write_text(""),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "empty"),
    ("metrics-rows-lost-complete", "trunk", lambda r: cut(r / "trunk/metrics.csv", keep_lines=6),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "metrics.csv"),
    ("metrics-rows-lost-stats", "trunk", lambda r: cut(r / "trunk/metrics.csv", keep_lines=6),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "sha256"),
    ("metrics-cut-mid-line-resume", "cut", lambda r: cut(r / "trunk/metrics.csv", keep_bytes=-7),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "cut short"),
    ("metrics-rows-lost-resume", "cut", lambda r: cut(r / "trunk/metrics.csv", keep_lines=4),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "rows"),
    ("metrics-deleted-resume", "cut", lambda r: (r / "trunk/metrics.csv").unlink(),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "missing"),
    ("state-wrong-structure", "cut", lambda r: resealed(r, CKPT.format(25, "state.pt"), state_blob({"x": 1})),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "no optimizer state"),
    ("state-wrong-optimizer", "cut", lambda r: resealed(r, CKPT.format(25, "state.pt"), state_blob(
        {"optimizer": {"state": {}, "param_groups": [{"params": [0]}]}, "rng": {"torch": torch.get_rng_state()}})),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "does not fit the optimizer"),
    ("state-not-a-pickle", "cut", lambda r: resealed(r, CKPT.format(25, "state.pt"), b"not a zip file"),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "unreadable"),
    ("weights-of-another-step", "cut", lambda r: resealed(
        r, CKPT.format(25, "safetensors"), (r / CKPT.format(20, "safetensors")).read_bytes()),
     lambda r, c: ["train", "--out", str(r), *tiny(c)], 2, "holds iteration '20'"),
    ("weights-of-another-model", "trunk", lambda r: resealed(r, CKPT.format(10, "safetensors"), st_save(
        {"fc.weight": torch.zeros(3, 3)}, metadata={"step": "10"})),
     lambda r, c: ["imp", "--from", str(r), "--levels", "1", "--rewind-iter", "10", "--data-dir", str(c)],
     2, "does not fit the model"),
    ("weights-of-another-model-stats", "trunk", lambda r: resealed(r, CKPT.format(10, "safetensors"), st_save(
        {"fc.weight": torch.zeros(3, 3)}, metadata={"step": "10"})),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "does not fit the model"),
    ("stats-final-checkpoint-deleted", "trunk", lambda r: (r / CKPT.format(30, "safetensors")).unlink(),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "it00000030.safetensors"),
    ("imp-final-checkpoint-deleted", "trunk", lambda r: (r / CKPT.format(30, "safetensors")).unlink(),
     lambda r, c: ["imp", "--from", str(r), "--levels", "1", "--rewind-iter", "10", "--data-dir", str(c)],
     2, "it00000030.safetensors"),
    ("mask-garbage-with-its-hash", "trunk", lambda r: resealed(
        r / one("branches/imp-*", r).relative_to(r), "level_01/mask.safetensors", b"garbage"),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "mask"),
    ("mask-of-another-model", "trunk", lambda r: resealed(
        r / one("branches/imp-*", r).relative_to(r), "level_01/mask.safetensors",
        st_save({"fc.weight": torch.ones(3, dtype=torch.bool)})),
     lambda r, c: ["imp", "--from", str(r), "--levels", "2", "--rewind-iter", "25", "--data-dir", str(c)],
     2, "does not fit the model"),
    ("mask-flipped", "trunk", lambda r: flip(one("branches/imp-*/level_01/mask.safetensors", r)),
     lambda r, c: ["stats", str(r), "--data-dir", str(c)], 2, "corrupt"),
    ("interpolation-cut", "trunk", lambda r: cut(one("branches/stability-*/interpolation.csv", r), keep_lines=2),
     lambda r, c: ["stability", str(r), "--at", "25", "--points", "2", "--bn", "interpolate", "--data-dir", str(c),
                   "--progress", "none"], 2, "interpolation.csv"),
    ("rewind-point-corrupt-leaves-no-branch", "trunk", lambda r: flip(r / CKPT.format(10, "safetensors")),
     lambda r, c: ["imp", "--from", str(r), "--levels", "1", "--rewind-iter", "10", "--data-dir", str(c)],
     2, "corrupt"),
    ("warm-arm-metrics-cut", "ws", lambda r: cut(one("branches/warm-warm-*/second/metrics.csv", r), keep_lines=3),
     lambda r, c: ["warm-start", "--out", str(r), *tiny(c), *WARM], 2, "metrics.csv"),
    ("warm-dry-run-another-config", "ws", lambda r: None,
     lambda r, c: ["warm-start", "--out", str(r), *tiny(c, lr=0.2), *WARM, "--dry-run"], 2, "train.lr: 0.05 -> 0.2"),
    ("train-dry-run-another-config", "trunk", lambda r: None,
     lambda r, c: ["train", "--out", str(r), *tiny(c, steps="60it"), "--dry-run"], 2, "different config"),
    ("linear-width-changed", "lin", lambda r: None,
     lambda r, c: [*LINEAR, "--width", "16", "--out", str(r)], 2, "width: 8 -> 16"),
    ("linear-dry-run-width-changed", "lin", lambda r: None,
     lambda r, c: [*LINEAR, "--width", "16", "--out", str(r), "--dry-run"], 2, "width: 8 -> 16"),
    ("linear-metrics-cut", "lin", lambda r: cut(r / "depth2-seed0/trunk/metrics.csv", keep_lines=3),
     lambda r, c: [*LINEAR, "--out", str(r)], 2, "metrics.csv"),
    ("linear-metrics-cut-on-extension", "lin", lambda r: cut(r / "depth2-seed0/trunk/metrics.csv", keep_lines=3),
     lambda r, c: [*LINEAR, "--deficit-start", "0,20", "--out", str(r)], 2, "metrics.csv"),
    ("linear-checkpoint-corrupt", "lin", lambda r: flip(r / "depth2-seed0/trunk/checkpoints/it00000000.safetensors"),
     lambda r, c: [*LINEAR, "--deficit-start", "0,20", "--out", str(r)], 2, "corrupt"),
]


@pytest.mark.parametrize("source, damage, command, expected, word", [d[1:] for d in DAMAGE],
                         ids=[d[0] for d in DAMAGE])
def test_damaged_archive(made, tmp_path, capsys, source, damage, command, expected, word):
    base, cache = made
    root = tmp_path / source
    shutil.copytree(base / source, root)
    damage(root)
    before = {k: data for k, (data, _) in file_states(root).items()}  # bytes: a refusal may rewrite alike
    code, out, err = run_cli(command(root, cache), capsys)
    check(code, out, err, expected, word)
    after = {k: data for k, (data, _) in file_states(root).items()}
    assert {k: v for k, v in after.items() if k in before} == before  # nothing saved was changed or removed
    if expected:  # a refused command leaves no run it opened behind (no manifest left running)
        assert {k for k in after if k.endswith("manifest.json")} == {k for k in before if k.endswith("manifest.json")}


def test_stats_reports_a_deleted_checkpoint(made, tmp_path, capsys, monkeypatch):
    """A checkpoint deleted since it was recorded is named in the output, its row left out (the figure
    and TensorBoard files, drawn from the same table, are left out here: they take seconds)."""
    from rewind.analysis import early_report

    monkeypatch.setattr(early_report, "figure_png", lambda table: b"png")
    monkeypatch.setattr(early_report, "write_tensorboard", lambda *args: None)
    base, cache = made
    root = tmp_path / "trunk"
    shutil.copytree(base / "trunk", root)
    (root / CKPT.format(5, "safetensors")).unlink()
    code, out, err = run_cli(["stats", str(root), "--data-dir", str(cache)], capsys)
    check(code, out, err, 0, "left out (recorded in the manifest, deleted since): it00000005.safetensors")
    table = (root / "trunk" / "analysis" / "early_phase.csv").read_text()
    assert [int(line.split(",")[0]) for line in table.splitlines()[1:]] == [0, 1, 2, 10, 20, 25, 30]


def test_advice_names_only_files_that_exist(made, tmp_path, capsys):
    """A corrupt checkpoint without a .state.pt (the deep-linear studies save none): the advice says to
    delete the one file there is."""
    base, _ = made
    root = tmp_path / "lin"
    shutil.copytree(base / "lin", root)
    flip(root / "depth2-seed0/trunk/checkpoints/it00000000.safetensors")
    code, _, err = run_cli([*LINEAR, "--deficit-start", "0,20", "--out", str(root)], capsys)
    assert code == 2 and "state.pt" not in err and "delete " + str(root / "depth2-seed0/trunk/checkpoints/"
                                                                     "it00000000.safetensors") in err


def test_runs_list_reports_an_unreadable_archive_and_lists_the_rest(made, tmp_path, capsys):
    base, _ = made
    for name in ("a", "b"):
        shutil.copytree(base / "cut", tmp_path / name)
    (tmp_path / "a" / "manifest.json").write_text("{")
    code, out, err = run_cli(["runs", "list", str(tmp_path)], capsys)
    check(code, out, err, 2, str(tmp_path / "a" / "manifest.json"))
    assert str(tmp_path / "b") in out and "running" in out


def test_a_complete_tables_truncation_no_longer_changes_the_study_table(made, tmp_path, capsys):
    """Issue 21's warm 35.70% -> 9.90%: the table is refused, and results.csv stays as it was."""
    base, cache = made
    root = tmp_path / "ws"
    shutil.copytree(base / "ws", root)
    before = (root / "results.csv").read_bytes()
    cut(one("branches/warm-warm-*/second/metrics.csv", root), keep_lines=3)
    code, _, err = run_cli(["warm-start", "--out", str(root), *tiny(cache), *WARM], capsys)
    assert code == 2 and (root / "results.csv").read_bytes() == before

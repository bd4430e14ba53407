import errno
import json

import pytest
import torch

from rewind.archive import atomic
from rewind.archive.lock import FolderLock
from rewind.archive.manifest import Manifest
from rewind.archive.stage import Stage
from rewind.errors import UserError


def _stage(tmp_path):
    m = Manifest.new(tmp_path / "manifest.json", kind="trunk")
    return Stage(m, "trunk")


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(7), "m": torch.ones(4, dtype=torch.bool)}


def test_checkpoint_round_trip_is_exact_and_recorded(tmp_path):
    stage = _stage(tmp_path)
    state = {"optimizer": {"state": {0: {"momentum_buffer": torch.randn(3)}}, "param_groups": [{"lr": 0.1}]},
             "rng": {"torch": torch.get_rng_state()}}
    stage.save(500, _tensors(), {"epoch": 1.28}, state)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"trunk/checkpoints/it00000500.safetensors", "trunk/checkpoints/it00000500.state.pt"}
    ckpt = Stage(Manifest.read(tmp_path / "manifest.json"), "trunk").load(500, with_state=True)
    assert all(torch.equal(ckpt.tensors[k], v) for k, v in _tensors().items())
    assert ckpt.metadata == {"step": "500", "epoch": "1.28"}
    assert torch.equal(ckpt.state["optimizer"]["state"][0]["momentum_buffer"],
                       state["optimizer"]["state"][0]["momentum_buffer"])
    assert stage.steps() == [500]


def test_one_flipped_byte_is_refused_naming_the_file(tmp_path):
    stage = _stage(tmp_path)
    stage.save(10, _tensors(), {})
    path = stage.checkpoint_dir / "it00000010.safetensors"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=f"checkpoint {path} is corrupt"):
        stage.load(10)


def test_truncated_checkpoint_is_refused(tmp_path):
    stage = _stage(tmp_path)
    stage.save(10, _tensors(), {})
    path = stage.checkpoint_dir / "it00000010.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    # Through the manifest, the hash catches it first; a file read without a recorded hash (as
    # `read_tensors(path, None)` does) is still one line, not a safetensors traceback.
    with pytest.raises(UserError, match=f"checkpoint {path} is corrupt"):
        stage.load(10)
    from rewind.archive import checkpoints as ck

    with pytest.raises(UserError, match=f"checkpoint {path} is unreadable"):
        ck.read_tensors(path, None)


def test_state_files_never_unpickle_arbitrary_objects(tmp_path):
    from rewind.archive import checkpoints as ck

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "x.state.pt"
    torch.save({"evil": Evil()}, path)
    with pytest.raises(UserError, match="unreadable"):
        ck.read_state(path, None)


def test_missing_step_lists_what_is_held(tmp_path):
    stage = _stage(tmp_path)
    for s in (0, 250, 500):
        stage.save(s, _tensors(), {})
    with pytest.raises(UserError, match="no checkpoint at iteration 300; it holds iterations: 0, 250, 500"):
        stage.load(300)


def test_unrecorded_file_is_ignored(tmp_path):
    stage = _stage(tmp_path)
    stage.save(0, _tensors(), {})
    # A kill between writing a file and recording it leaves an unrecorded file behind.
    (stage.checkpoint_dir / "it00000100.safetensors").write_bytes(b"partial")
    assert stage.steps() == [0]


def test_disk_full_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic.write_text(path, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(UserError, match="disk full while writing .*f.json.*run the same command again"):
        atomic.write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind


def test_newer_schema_is_refused_by_name(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UserError, match="schema version 99"):
        Manifest.read(tmp_path / "manifest.json")


def test_second_writer_is_refused(tmp_path):
    with FolderLock(tmp_path):
        with pytest.raises(UserError, match="being written by another process"):
            FolderLock(tmp_path).acquire()
    FolderLock(tmp_path).acquire().release()  # released: free again

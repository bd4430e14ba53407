"""Run folders: create or reopen an archive under a lock, refuse one made with another config."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rewind.archive.atomic import write_bytes
from rewind.archive.checkpoints import sha256
from rewind.archive.lock import FolderLock
from rewind.archive.manifest import Manifest
from rewind.archive.stage import METRICS, Stage
from rewind.errors import UserError

MANIFEST = "manifest.json"


class Run:
    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    @property
    def root(self) -> Path:
        return self.manifest.root

    @property
    def status(self) -> str:
        return self.manifest.data["status"]

    def stage(self, rel: str) -> Stage:
        return Stage(self.manifest, rel)

    def update(self, **fields: Any) -> None:
        self.manifest.data.update(fields)
        self.manifest.save()

    def complete(self, tables: tuple[str, ...] = (), **fields: Any) -> None:
        """Mark the run complete (with `fields`), recording the sha256 of its tables as they are now:
        every metrics.csv of its stages and `tables` (paths relative to the run), which readers then
        take only whole (`Stage.metrics`, `tables.read_frame`)."""
        for path in [*_metrics_files(self.root), *(self.root / t for t in tables)]:
            self.manifest.files[path.relative_to(self.root).as_posix()] = sha256(path.read_bytes())
        self.update(status="complete", **fields)

    def table_sha(self, rel: str) -> str | None:
        """The sha256 a complete run recorded for its table `rel` (None: nothing to check it against)."""
        return self.manifest.files.get(rel) if self.status == "complete" else None


def _metrics_files(root: Path) -> list[Path]:
    """The metrics.csv of every stage of the run at `root` (not of the branches under it)."""
    out = []
    for folder, subfolders, files in os.walk(root):
        if Path(folder) == root and "branches" in subfolders:
            subfolders.remove("branches")
        if METRICS in files:
            out.append(Path(folder) / METRICS)
    return sorted(out)


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


@contextmanager
def open_run(root: str | Path, kind: str, config: dict[str, Any], identity: dict[str, Any],
             **fields: Any) -> Iterator[Run]:
    """The locked run at `root`: created if new, reopened (to resume) if made with the same identity.

    `config` is recorded as given (it may hold runtime settings); `identity` is what must match to
    resume: the settings that determine results.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a run folder; choose another --out")
    # `launch/`: a study's plans and job records, written before its first run starts
    if root.is_dir() and not (root / MANIFEST).exists() and any(p.name not in (".lock", "launch")
                                                               for p in root.iterdir()):
        raise UserError(f"{root} already exists and is not a rewind archive; choose another --out")
    existed = sorted(os.listdir(root)) if root.is_dir() else None
    with FolderLock(root):
        before = (root / MANIFEST).read_bytes() if (root / MANIFEST).exists() else None
        if before is not None:
            manifest = Manifest.read(root / MANIFEST)
            check_identity(root, manifest.data, kind, identity)
            manifest.data["config"] = config  # runtime settings (device, paths) may change between resumes
        else:
            manifest = Manifest.new(root / MANIFEST, kind=kind, config=config, identity=identity,
                                    config_hash=identity_hash(identity), **fields)
        files = dict(manifest.files)
        manifest.save()
        try:
            yield Run(manifest)
        except BaseException:
            if manifest.files == files:  # stopped before it saved anything: the folder as it was
                _put_back(root, before, existed)
            raise


def check_identity(root: Path, data: dict[str, Any], kind: str, identity: dict[str, Any]) -> None:
    """UserError unless the run recorded in `data` (the manifest at `root`) is a `kind` run of `identity`:
    what reopening a run checks, and what a plan checks of the runs it would reopen."""
    if data.get("kind") != kind:
        raise UserError(f"{root} holds a {data.get('kind')} run, not a {kind} run; choose another --out")
    if data.get("config_hash") != identity_hash(identity):
        changes = diff(data.get("identity", {}), identity)
        raise UserError(
            f"{root} already holds a run with a different config ({'; '.join(changes[:3]) or 'its identity'}); "
            "use another --out, or the same options to resume it"
        )


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """'section.key: a -> b' for every value that differs between two identities (of sections, or
    flat, as the deep-linear studies' are, or nested deeper)."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def _put_back(root: Path, manifest: bytes | None, existed: list[str] | None) -> None:
    """Undo what a command that saved nothing did to a run folder: its manifest as it was (a new one
    removed, with what was made beside it; `existed`: the folder's entries before, None if it was new)."""
    if manifest is not None:
        write_bytes(root / MANIFEST, manifest)
    elif existed is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        for name in set(os.listdir(root)) - set(existed) - {".lock"}:
            path = root / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def read(root: str | Path) -> Run:
    """An existing run, without taking its lock (for listing and reading)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{root} is not a rewind archive (no {MANIFEST}); `rewind runs list` shows the runs")
    return Run(Manifest.read(path))


def read_trunk(root: str | Path) -> Run:
    """A complete trunk archive, which branches and analyses read (and never retrain)."""
    run = read(root)
    kind = run.manifest.data.get("kind")
    if kind != "trunk":
        raise UserError(f"{root} is not a trunk archive (it holds a {kind} run)")
    if run.status != "complete":
        raise UserError(f"trunk {root} is not complete (status {run.status}); "
                        "finish it first by running its `rewind train` command again")
    end = final_step(run)
    if not run.stage("trunk").has(end):
        path = run.stage("trunk").checkpoint_dir / f"it{end:08d}.safetensors"
        raise UserError(f"trunk {root} lacks its final checkpoint {path} "
                        "(deleted since it was recorded); restore it, or run the command that trained the trunk "
                        "again: it trains the end again from the checkpoint before it")
    return run


def final_step(run: Run) -> int:
    """A trunk's last step: its length, or where stopping by fit ended it."""
    d = run.manifest.data
    return int(d.get("final_step", d.get("total_iterations", 0)))


def find(root: str | Path) -> list[Path]:
    """Run folders under `root` (the folder itself included), sorted by path."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(MANIFEST) if "branches" not in p.relative_to(root).parts)

"""Run folders: create or reopen an archive under a lock, refuse one made with another config."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rewind import config as cfg
from rewind.archive.lock import FolderLock
from rewind.archive.manifest import Manifest
from rewind.archive.stage import Stage
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
    with FolderLock(root):
        if (root / MANIFEST).exists():
            manifest = Manifest.read(root / MANIFEST)
            if manifest.data.get("kind") != kind:
                raise UserError(f"{root} holds a {manifest.data.get('kind')} run, not a {kind} run; choose another --out")
            if manifest.data.get("config_hash") != identity_hash(identity):
                changes = cfg.diff(manifest.data["identity"], identity)
                raise UserError(
                    f"{root} already holds a run with a different config ({'; '.join(changes[:3])}); "
                    "use another --out, or the same options to resume it"
                )
            manifest.data["config"] = config  # runtime settings (device, paths) may change between resumes
        else:
            manifest = Manifest.new(root / MANIFEST, kind=kind, config=config, identity=identity,
                                    config_hash=identity_hash(identity), **fields)
        manifest.save()
        yield Run(manifest)


def read(root: str | Path) -> Run:
    """An existing run, without taking its lock (for listing and reading)."""
    path = Path(root) / MANIFEST
    if not path.exists():
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
    return run


def find(root: str | Path) -> list[Path]:
    """Run folders under `root` (the folder itself included), sorted by path."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob(MANIFEST) if "branches" not in p.relative_to(root).parts)

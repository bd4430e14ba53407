"""manifest.json: what a run folder holds and how it was made (JSON only, schema-versioned)."""

from __future__ import annotations

import functools
import json
import platform
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import rewind
from rewind.archive.atomic import write_json
from rewind.errors import UserError

SCHEMA_VERSION = 1


def versions() -> dict[str, str | None]:
    return {
        "rewind": rewind.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the rewind source tree, when it runs from a git checkout (asked once per process:
    a sweep creates dozens of manifests)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(rewind.__file__).parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """The command that made the run; a launched job records the study's command (REWIND_COMMAND)."""
    return os.environ.get("REWIND_COMMAND") or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


class Manifest:
    """A dict persisted atomically; `files` maps paths relative to the folder to their sha256."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read {path}: {e}; the folder is not a usable rewind archive") from None
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{path} has schema version {version}, this rewind ({rewind.__version__}) reads version "
                f"{SCHEMA_VERSION}; use the rewind version that wrote it"
            )
        data.setdefault("files", {})
        return cls(path, data)

    @classmethod
    def new(cls, path: str | Path, **fields: Any) -> "Manifest":
        data = {"schema_version": SCHEMA_VERSION, "status": "running", "created": now(),
                "command": command_line(), "versions": versions(), "git_sha": git_sha(), **fields, "files": {}}
        if os.environ.get("REWIND_JOB"):  # made by a launched job: its plan file and name
            data["job"] = os.environ["REWIND_JOB"]
        return cls(Path(path), data)

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def files(self) -> dict[str, str]:
        return self.data["files"]

    def save(self) -> None:
        write_json(self.path, self.data)

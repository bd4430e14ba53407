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


# The fields rewind writes into manifests, with the JSON types each must have (None: may be null).
# Unknown fields are kept (a later rewind may add some); these are checked once, here, so that no
# reader fails later on a value of the wrong type.
_NUMBER = (int, float)
FIELDS: dict[str, tuple] = {
    "schema_version": (int,), "status": (str,), "kind": (str,), "files": (dict,), "config": (dict,),
    "identity": (dict,), "config_hash": (str,), "created": (str,), "command": (str,), "versions": (dict,),
    "git_sha": (str, None), "job": (str,), "device": (str,), "seeds": (dict,), "iterations_per_epoch": (int,),
    "total_iterations": (int,), "schedule_offset": (int,), "pretrain_iterations": (int,), "final_step": (int,),
    "final_test": (dict,), "best_test_acc": _NUMBER, "trunk": (str,), "rewind_iter": (int,), "levels": (dict,),
    "levels_done": (int,), "study": (str,), "arm": (str,), "values": (dict,), "start": (int, None),
    "baseline": (str,), "reached_fit": (bool, None), "k": (int,), "noise": (str,), "order_seeds": (list,),
    "aug_seeds": (list,), "barriers": (dict,), "barrier": _NUMBER, "child_test_acc": (list,),
}
REQUIRED = ("schema_version", "status", "kind")
# What a complete run of each kind has recorded, which the readers of its results use.
COMPLETE_REQUIRES = {"trunk": ("config", "iterations_per_epoch", "total_iterations", "final_test"),
                     "stability": ("k", "child_test_acc"), "warm-start": ("final_test",), "critical": ("final_test",)}
STATUSES = ("running", "complete")


def _is(value: Any, types: tuple) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):  # JSON true is no number
        return bool in types
    return isinstance(value, tuple(t for t in types if t is not None))


def shape_problem(data: dict[str, Any]) -> str | None:
    """What makes `data` no manifest rewind wrote (a field missing or of the wrong type), or None."""
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        return f"it lacks {', '.join(missing)}"
    for key, types in FIELDS.items():
        if key in data and not _is(data[key], types):
            return f"its {key!r} is {json.dumps(data[key])[:40]}, not {_type_names(types)}"
    if data["status"] not in STATUSES:
        return f"its status {data['status']!r} is not one of {', '.join(STATUSES)}"
    needs = COMPLETE_REQUIRES.get(data["kind"], ()) if data["status"] == "complete" else ()
    if missing := [k for k in needs if k not in data]:
        return f"this complete {data['kind']} run lacks {', '.join(missing)}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data["files"].items()):
        return "its 'files' are not all paths with a sha256"
    if not all(str(k).isdigit() and isinstance(v, dict) for k, v in data.get("levels", {}).items()):
        return "its 'levels' are not one row per level"
    if "final_test" in data and not all(_is(data["final_test"].get(k), _NUMBER) for k in ("acc", "loss")):
        return "its 'final_test' lacks a numeric acc and loss"
    return None


def _type_names(types: tuple) -> str:
    names = {int: "a whole number", float: "a number", str: "a string", dict: "an object", list: "a list",
             bool: "true or false", None: "null"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def damaged(path: Path, why: str) -> UserError:
    """The one line for a damaged manifest: which, what is wrong, how to recover."""
    return UserError(f"{path} is damaged ({why}); restore it from a backup, or move {path.parent} away and run "
                     "the command that made it again to train it anew")


class Manifest:
    """A dict persisted atomically; `files` maps paths relative to the folder to their sha256."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """The manifest at `path`, refused with one line (what is wrong, how to recover) unless it is
        a JSON object of the shape rewind writes: every reader of a run folder starts here."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "it is not valid JSON"
            raise damaged(path, why) from None
        if not isinstance(data, dict):
            raise damaged(path, f"it holds a JSON {type(data).__name__}, not an object")
        version = data.get("schema_version")
        if "schema_version" in data and version != SCHEMA_VERSION:
            raise UserError(
                f"{path} has schema version {version}, this rewind ({rewind.__version__}) reads version "
                f"{SCHEMA_VERSION}; use the rewind version that wrote it"
            )
        data.setdefault("files", {})
        if problem := shape_problem(data):
            raise damaged(path, problem)
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

    def forget(self, key: str) -> None:
        """Drop the sha256 of a file about to be rewritten (a table a complete run recorded), so that
        it is not held against the new content until it is recorded again."""
        if self.files.pop(key, None) is not None:
            self.save()

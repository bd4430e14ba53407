"""Reopen a finished (or running) archive for analysis: its run, and the Setup its config implies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewind import config as cfg
from rewind.archive import run as runs
from rewind.train.trunk import Setup


def reopen(run_root: str | Path, overrides: dict[str, Any] | None = None) -> tuple[runs.Run, Setup]:
    """The run at `run_root` (read without its lock) and a Setup from its recorded config.

    `overrides` replaces config fields by name, e.g. `{"device": "cpu", "data_dir": ...}` to read
    an archive on another machine; fields that change results change what is computed.
    """
    run = runs.read(run_root)
    config = cfg.from_record(run.manifest.data["config"], overrides, where=str(run.manifest.path))
    return run, Setup.create(config)

"""What `rewind runs list` and `rewind runs show` print about archives: their state, checkpoints,
branches and resolved settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rewind import config as cfg
from rewind.archive import run as runs
from rewind.archive.manifest import Manifest
from rewind.archive.stage import Stage
from rewind.errors import UserError


def _last_test(manifest_data: dict[str, Any]) -> str:
    test = manifest_data.get("final_test")
    return f"{100 * test['acc']:.2f}%" if test else "-"


def run_rows(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(a row per archive under `root`, a line per archive that cannot be read, saying why)."""
    if not root.exists():
        raise UserError(f"{root} does not exist; give the folder that holds your archives (default runs/)")
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a folder of archives; give the folder that holds them (default runs/)")
    rows, unreadable = [], []
    for path in runs.find(root):
        try:
            run = runs.read(path)
        except UserError as e:
            unreadable.append(str(e))
            continue
        d = run.manifest.data
        held = Stage(run.manifest, "trunk").steps()
        rows.append({"run": str(path), "kind": d.get("kind"), "status": d.get("status"),
                     "iterations": f"{held[-1] if held else 0}/{d.get('total_iterations', '?')}",
                     "test_acc": _last_test(d), "config": d.get("config_hash")})
    return rows, unreadable


def describe(path: Path) -> str:
    run = runs.read(path)
    d = run.manifest.data
    held = Stage(run.manifest, "trunk").steps()
    lines = [
        f"run        {path}",
        f"kind       {d.get('kind')}",
        f"status     {d.get('status')}",
        f"created    {d.get('created')}  by: {d.get('command')}",
        "versions   " + ", ".join(f"{k} {v}" for k, v in d.get("versions", {}).items()),
        f"config     {d.get('config_hash')}"
        + (f"  ({d['iterations_per_epoch']} iterations per epoch)" if "iterations_per_epoch" in d else ""),
        f"test acc   {_last_test(d)} final, "
        + (f"{100 * d['best_test_acc']:.2f}% best" if "best_test_acc" in d else "- best"),
        f"checkpoints ({len(held)}): {', '.join(map(str, held)) or 'none'}",
    ]
    # sections of rewind.linear.config, stored resolved; branch kinds hold their own settings
    plain = str(d.get("kind", "")).startswith("linear-") or d.get("kind") not in ("trunk", "imp", "critical",
                                                                                   "warm-start")
    config = None if plain else cfg.from_record(d.get("config", {}), where=str(run.manifest.path))
    if config is not None and config.pretrain.pretrain != "none":
        lines.insert(6, f"pretrain   {config.pretrain.describe(d.get('pretrain_iterations')).removeprefix('pretrain ')}")
    branches = sorted((path / "branches").glob("*/manifest.json")) if (path / "branches").is_dir() else []
    if branches:
        lines.append("branches:")
        for b in branches:
            try:
                bd = Manifest.read(b).data
            except UserError as e:
                lines.append(f"  {b.parent.name}  unreadable: {e}")
                continue
            done = len([k for k in bd.get("files", {}) if k.endswith("mask.safetensors")])
            lines.append(f"  {b.parent.name}  {bd.get('kind')}  {bd.get('status')}  levels started: {done}")
    lines += ["", "# resolved config", cfg.to_toml(d.get("config", {}) if plain else config)]
    return "\n".join(lines)

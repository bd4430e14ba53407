"""What a figure is: plain data. The study runs it needs (ordinary deep-linear study settings, so
archives, resume, --dry-run and --executor apply as they do to `rewind linear`) and a function that
draws it from those runs' tables, writing its PNG and the CSV of the numbers drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Request:
    """One study sweep: `kind` "pathways" or "completion", its settings (flat field names; seeds, runtime
    and launch come from the command). Requests of one `root` (a folder under OUT/runs/) share their
    archives, so a run two figures need trains once, and train one after another; requests of
    different roots share nothing and may train at once (`--executor local --local-jobs 2`)."""

    kind: str
    root: str
    settings: dict[str, Any]
    label: str = ""


@dataclass(frozen=True)
class Figure:
    """`requests(scale)`: the sweeps it reads, in the order its draw function gets their tables;
    `draw(drawing)` writes the PNG and CSV and returns the headline (one line for the README)."""

    name: str
    paper: str  # where the paper or the authors' code has it
    title: str
    requests: Callable[[str], tuple[Request, ...]]
    draw: Callable[["Drawing"], str]


@dataclass
class Drawing:
    """What a draw function gets."""

    figure: Figure
    scale: str
    seeds: list[int]
    reference: bool
    png: Path
    csv: Path
    tables: list[Any] = field(default_factory=list)  # per request: the study's Tables
    studies: list[Any] = field(default_factory=list)  # per request: the study's settings

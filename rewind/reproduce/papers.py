"""The papers `rewind reproduce` knows: name -> the module listing its figures (imported when asked)."""

from __future__ import annotations

import importlib

from rewind.errors import UserError

PAPERS = {
    "kleinman2024": ("rewind.reproduce.kleinman2024",
                     "Kleinman, Achille, Soatto: Critical Learning Periods Emerge Even in Deep Linear Networks "
                     "(ICLR 2024, arXiv 2308.12221)"),
}


def names() -> list[str]:
    return list(PAPERS)


def _entry(paper: str) -> tuple[str, str]:
    if paper not in PAPERS:
        raise UserError(f"no paper {paper!r} to reproduce; known: {', '.join(PAPERS)} (`rewind reproduce --list`)")
    return PAPERS[paper]


def figures(paper: str) -> list:
    return list(importlib.import_module(_entry(paper)[0]).FIGURES)


def title(paper: str) -> str:
    return _entry(paper)[1]

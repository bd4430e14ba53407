"""Figures as PNG: a plain matplotlib Figure on an Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rewind.archive.atomic import write_bytes


def figure(width: float = 6, height: float = 4, dpi: int = 120) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path) -> None:
    write_bytes(path, png_bytes(fig))

"""The CSV tables a run folder keeps and rewind reads back (metrics.csv, interpolation.csv): read only
when whole.

A table is refused, with one line naming it, saying what is wrong and how to recover, when it is
missing, not UTF-8 text, empty, cut short (a last line without its newline, a row with fewer
fields than the header) or without the columns it must have; and, when the manifest recorded its
sha256 (a complete run's tables), when its bytes no longer match that record.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from rewind.archive.checkpoints import sha256
from rewind.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def read_text(path: Path, expected: str | None, advice: str, columns: tuple[str, ...] = ()) -> tuple[str, list[str],
                                                                                                       list[list[str]]]:
    """(the file's text, its header, its rows), refused unless whole (see the module)."""
    def refuse(why: str) -> UserError:
        return UserError(f"{path} is damaged ({why}); {advice}")

    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {advice}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        raise refuse("it is not text") from None
    if not text.strip():
        raise refuse("it is empty")
    if not text.endswith("\n"):
        raise refuse("its last line is cut short")
    try:
        header, *rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise refuse(f"it is not CSV: {e}") from None
    missing = [c for c in columns if c not in header]
    if missing or len(set(header)) != len(header):
        raise refuse(f"its header lacks {', '.join(missing)}" if missing else "its header repeats a column")
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise refuse(f"line {n} has {len(row)} fields, the header {len(header)}")
    if expected is not None and sha256(blob) != expected:
        raise refuse("its sha256 does not match the one its manifest recorded when the run completed: it was "
                     "cut short or changed since")
    return text, header, rows


def read_frame(path: Path, expected: str | None, advice: str, columns: tuple[str, ...] = ()) -> "pd.DataFrame":
    """The table as pandas reads it (`pandas.read_csv`), once it is known to be whole."""
    import pandas as pd

    text, _, _ = read_text(path, expected, advice, columns)
    return pd.read_csv(io.StringIO(text))

"""metrics.csv (one row per logged step, read with pandas.read_csv as-is) and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rewind.archive.atomic import write_text
from rewind.archive.tables import read_text
from rewind.errors import UserError

FIRST_COLUMNS = ["split", "step", "epoch", "loss", "acc", "lr"]


def read_metrics(path: Path, expected: str | None = None, advice: str = "") -> list[dict[str, str]]:
    """The rows of a metrics.csv (strings, as csv reads them), refused unless whole (`tables.read_text`)
    and every row has a split, a whole-number step and numbers (or nothing) elsewhere."""
    _, header, rows = read_text(path, expected, advice, tuple(FIRST_COLUMNS))
    for n, row in enumerate(rows, start=2):
        record = dict(zip(header, row))
        if not record["split"] or not record["step"].isdigit() or not all(_number(v) for k, v in record.items()
                                                                           if k != "split"):
            raise UserError(f"{path} is damaged (line {n} is not a row of metrics: {','.join(row)[:60]!r}); {advice}")
    return [dict(zip(header, row)) for row in rows]


def _number(text: str) -> bool:
    if text in ("", "True", "False"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


class MetricsLog:
    """Rows kept in memory and rewritten atomically at each flush, so the file is always whole.

    Resuming at step S keeps the rows up to S (which were flushed with checkpoint S) and drops
    later ones, so the resumed file equals an uninterrupted run's. `expected_rows`: how many rows up to
    S checkpoint S was saved with (`rows_through`); a file holding another number, or none, is
    refused (`advice` says how to recover) rather than resumed with rows missing.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None, tensorboard: bool = True,
                 expected_rows: int | None = None, advice: str = ""):
        self.path = Path(folder) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self._dirty = True  # whether the file must be (re)written
        if resume_step is not None and (self.path.exists() or expected_rows):
            every = read_metrics(self.path, advice=advice)
            self.rows = [r for r in every if int(r["step"]) <= resume_step]
            self._dirty = len(self.rows) != len(every)
            if expected_rows is not None and len(self.rows) != expected_rows:
                raise UserError(f"{self.path} is damaged (it holds {len(self.rows)} rows up to iteration "
                                f"{resume_step}, where the checkpoint was saved with {expected_rows}: rows were "
                                f"lost or added); {advice}")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run logged after its last checkpoint.
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(folder), purge_step=purge, flush_secs=30)

    def rows_through(self, step: int) -> int:
        """How many rows are logged up to `step`: recorded with checkpoint `step`, checked on resume."""
        return sum(int(r["step"]) <= step for r in self.rows)

    def log(self, split: str, step: int, values: dict[str, float], epoch: float | None = None) -> None:
        self.rows.append({"split": split, "step": step, "epoch": epoch, **values})
        self._dirty = True
        if self._tb is not None:  # one event holding every scalar: a tenth of the cost of one add_scalar each
            from tensorboard.compat.proto.summary_pb2 import Summary

            scalars = [Summary.Value(tag=f"{split}/{key}", simple_value=float(value)) for key, value in values.items()]
            self._tb._get_file_writer().add_summary(Summary(value=scalars), step)

    def hparams(self, config: dict[str, Any]) -> None:
        """Record the run's settings for TensorBoard's hparams plugin in this run's own event file
        (SummaryWriter.add_hparams would make a separate run), with test accuracy and loss as metrics."""
        if self._tb is None:
            return
        from torch.utils.tensorboard.summary import hparams

        flat = {}
        for section, table in config.items():
            for key, value in (table.items() if isinstance(table, dict) else [(None, table)]):
                if isinstance(value, (int, float, str, bool)):
                    flat[f"{section}.{key}" if key else section] = value
        writer = self._tb._get_file_writer()
        for summary in hparams(flat, {"test/acc": 0.0, "test/loss": 0.0}):
            writer.add_summary(summary)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
        if not self._dirty:
            return
        columns = list(FIRST_COLUMNS)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
        write_text(self.path, buf.getvalue())
        self._dirty = False

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value

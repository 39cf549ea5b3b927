"""`logger=csv`: `<run>/metrics.csv`, one row per logged step, a column per tag (pandas-readable:
`pd.read_csv(run / "metrics.csv")`; a tag not logged at a step is an empty cell).

No dependency. The file is rewritten whole (write, then rename) at each epoch's end and at
the end, so it is always complete, and a column that appears late (val/*, test/*) is a
proper column. A resumed run drops the rows at or after the step it resumes from, as
TensorBoard's purge_step does.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from aerun.loggers.base import Logger, RunInfo

FILENAME = "metrics.csv"


def read_rows(path: Path) -> list[dict]:
    """The rows of a metrics.csv as {column: float} (empty cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


class CsvLogger(Logger):
    name = "csv"

    def __init__(self, info: RunInfo):
        super().__init__(info)
        self.path = info.run_dir / (info.options.get("filename") or FILENAME)
        self.rows: dict[int, dict[str, float]] = {}
        if self.path.is_file():  # a resumed run: keep what was logged before the resume point
            keep = info.purge_step if info.purge_step is not None else math.inf
            self.rows = {int(r["step"]): r for r in read_rows(self.path) if r.get("step", math.inf) < keep}
        self.dirty = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        row = self.rows.setdefault(int(step), {"step": float(step)})
        row.update({tag: float(value) for tag, value in values.items()})
        self.dirty = True
        if "train/epoch" in values:  # an epoch ended: make the file current
            self.flush()

    def summary(self, metrics: dict[str, float], step: int) -> None:
        self.scalars(metrics, step)
        self.flush()

    def flush(self) -> None:
        from aerun.io import write_text

        if not self.dirty:
            return
        columns = ["step", *sorted({k for row in self.rows.values() for k in row} - {"step"})]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for step in sorted(self.rows):
            row = dict(self.rows[step])
            row["step"] = int(step)
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.path, out.getvalue())
        self.dirty = False

    def close(self, status: str) -> None:
        self.flush()

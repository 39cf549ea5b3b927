"""`SweepSummary`, a Hydra callback (`hydra.callbacks` in configs/train.yaml): after each job
of a sweep it rewrites the sweep's summary.csv / summary.md / best.json, so the table is
current even if the sweep is killed; when the sweep ends it prints the table and the
failed jobs. A job that died of an unexpected exception gets a failed status.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from aerun import runs
from aerun.errors import AerunError, UserError
from aerun.sweeps.summary import write_summary

try:  # Hydra >= 1.1; a plain base class keeps this module importable without it
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object

log = logging.getLogger("aerun.sweep")


def _is_multirun(config) -> bool:
    mode = config.hydra.get("mode") if "hydra" in config else None
    return getattr(mode, "name", str(mode)) == "MULTIRUN"


# Failed plus unfinished jobs of the last sweep this process ran; `aerun` exits 1 when it is > 0.
last_sweep_problems: int | None = None


class SweepSummary(Callback):
    """Keeps `<sweep dir>/summary.{csv,md}` and `best.json` current; prints them at the end."""

    def __init__(self, sort_by: str = "objective", descending: bool = False, print_at_end: bool = True,
                 metrics=None):
        self.sort_by = sort_by
        self.descending = descending
        self.print_at_end = print_at_end
        self.metrics = list(metrics) if metrics else None  # the table's metric columns (null: train's defaults)

    def _write(self, sweep_dir: Path):
        try:
            return write_summary(sweep_dir, sort_by=self.sort_by, descending=self.descending, metrics=self.metrics)
        except UserError as exc:  # no job dirs (yet), or a bad sort_by: say so, never break the sweep
            log.warning("sweep summary not written: %s", exc)
        except Exception:  # noqa: BLE001 - a summary bug must not fail a finished job
            log.warning("sweep summary not written", exc_info=True)
        return None

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            record_failure(job_dir, getattr(job_return, "_return_value", None))
        self._write(Path(config.hydra.sweep.dir))
        from aerun import faults

        faults.at("job_end")

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = self._write(sweep_dir)
        if summary is not None:
            global last_sweep_problems
            last_sweep_problems = len(summary.failed) + len(summary.unfinished)
        if summary is None or not self.print_at_end:
            return
        print(summary.markdown, flush=True)
        counts = summary.counts()
        line = (f"sweep: {len(summary.jobs)} jobs, " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                + f"; summary.md, summary.csv and best.json in {sweep_dir}")
        print(line, flush=True)
        if summary.failed or summary.unfinished:
            listed = [f"  job {j.name}: {j.status}: {j.reason or 'no reason recorded'}"
                      for j in summary.failed + summary.unfinished]
            print(f"aerun: {len(summary.failed)} failed and {len(summary.unfinished)} unfinished of "
                  f"{len(summary.jobs)} jobs:\n" + "\n".join(listed), file=sys.stderr, flush=True)


def record_failure(job_dir: Path, exc: BaseException | None, line: str | None = None) -> None:
    """A failed job: status failed with its one-line reason; the traceback goes to its log."""
    reason = line or (runs.one_line(exc) if exc is not None else "unexpected error")
    log.error("job failed: %s", reason, exc_info=exc if isinstance(exc, BaseException) else None)
    try:
        runs.write_status(job_dir, "failed", reason=reason[:500])
    except (OSError, AerunError) as error:
        log.warning("could not record the failure in %s: %s", job_dir / runs.STATUS, error)



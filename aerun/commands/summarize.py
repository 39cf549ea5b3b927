"""`aerun summarize <sweep dir>`: rebuild a sweep's summary table from its job directories
(see `aerun.sweeps.summary` for what it writes)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aerun.config import enum_value
from aerun.errors import UserError
from aerun.sweeps.summary import SUMMARY_CSV, SUMMARY_MD, write_summary

USES_TORCH = False  # reads CSV/JSON files only: launch skips importing torch for it

log = logging.getLogger("aerun.summarize")


def prepare_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """Hydra runs in the sweep dir itself and writes nothing there (no .hydra/, no log file):
    no run directory is made under outputs/ for a summary."""
    if any(o.split("=", 1)[0] == "hydra.run.dir" for o in overrides):
        return overrides
    return [*overrides, "hydra.run.dir=${dir}"]


def validate(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "dir") or cfg.dir in (None, ""):
        raise UserError("dir: missing; pass the sweep directory, e.g. aerun summarize outputs/multirun/2026-01-01/12-00-00")
    path = Path(str(cfg.dir)).expanduser()
    if not path.exists():
        raise UserError(f"dir={cfg.dir}: no such directory")
    if not path.is_dir():
        raise UserError(f"dir={cfg.dir}: not a directory; pass the sweep directory that 'aerun train -m' wrote")
    options = cfg.summarize
    if options.metrics is not None:
        for name in options.metrics:
            split = str(name).partition("/")[0]
            if "/" not in str(name) or split not in ("train", "val", "test"):
                raise UserError(f"summarize.metrics: '{name}' is not a train/<name>, val/<name> or test/<name> metric")


def run(cfg: DictConfig, job):
    """Rebuild the summary files and print the markdown table."""
    validate(cfg)
    options = cfg.summarize
    direction = enum_value(options.direction)
    summary = write_summary(Path(str(cfg.dir)).expanduser(), sort_by=options.sort_by, descending=options.descending,
                            metrics=list(options.metrics) if options.metrics is not None else None,
                            direction=direction)
    print(summary.markdown)
    log.info("wrote %s and %s in %s", SUMMARY_CSV, SUMMARY_MD, summary.sweep_dir)
    return summary.best["objective"]["value"] if summary.best else None

"""A sweep's job directories read back: each job's overrides, status and metrics.

A job is `running` only while the process that wrote its status still holds the run's
lock; one killed hard (SIGKILL, a lost node) reads as `interrupted`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from aerun import runs

# Overrides that say how a job ran, not what it is: never table columns.
IGNORED_KEYS = ("resume",)


@dataclass
class Job:
    path: Path
    name: str  # the run dir relative to the sweep dir ("0", "1", ...)
    status: str  # ok | running | interrupted | failed
    reason: str
    overrides: list[str]  # key=value as the job got them, less hydra.* and resume
    metrics: dict | None
    objective_name: str | None = None
    objective: float | None = None

    @property
    def values(self) -> dict[str, str]:
        """override key -> value ('model' -> 'vae', 'optim.lr' -> '0.001')."""
        return dict(_split_override(o) for o in self.overrides)

    def sort_key(self):
        return (0, int(self.name)) if self.name.isdigit() else (1, self.name)


def _split_override(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value if "=" in text else "<deleted>"


def clean_overrides(overrides) -> list[str]:
    """A job's overrides without Hydra's own (hydra.*, hydra/...) and without resume."""
    out = []
    for o in overrides or []:
        key = _split_override(str(o))[0]
        if key.startswith("hydra") or key in IGNORED_KEYS:
            continue
        out.append(str(o))
    return out


def effective_status(job_dir: Path, status: dict | None) -> tuple[str, str]:
    """(status, reason) of a job, from its status.json and whether its process still lives.

    `running` is believed only while the process that wrote it still holds the run's
    lock; a job killed hard (SIGKILL, a node lost) is `interrupted`. A status written on
    another host (a cluster node) cannot be checked from here and is kept as it is.
    """
    if status is None:
        if (job_dir / runs.METRICS).is_file():
            return "ok", ""
        return "interrupted", "no status.json: stopped before training started"
    state = str(status.get("status", "unknown"))
    reason = " ".join(str(status.get("reason") or "").split())
    if state != "running":
        return state, reason
    host = status.get("host")
    if host is not None and host != socket.gethostname():
        return "running", f"on {host}"
    pid = status.get("pid")
    lock = job_dir / runs.LOCK
    try:
        lock_pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        lock_pid = 0
    if pid and lock_pid == pid and runs.pid_alive(int(pid)):
        return "running", ""
    if pid and lock_pid == 0 and pid == os.getpid():
        # This very process ran the job and let go of the lock without a final status:
        # an unexpected exception (a bug, or a crash the sweep callback records).
        return "failed", "the job ended with an unexpected error; see its aerun.log"
    return "interrupted", f"its process ({pid or 'unknown pid'}) is gone: killed before it could record a result"


def objective_from_metrics(metrics: dict, name: str | None) -> tuple[str | None, float | None]:
    """The value of `split/metric` in a metrics.json ('auto' = val/loss, or test/loss without val)."""
    if not metrics:
        return None, None
    if name in (None, "auto"):
        stored = metrics.get("objective") or {}
        if name is None and stored.get("name"):
            return stored["name"], _number(stored.get("value"))
        name = "val/loss" if metrics.get("val") else "test/loss"
    split, _, metric = name.partition("/")
    return name, _number((metrics.get(split) or {}).get(metric))


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_job(job_dir: Path, sweep_dir: Path) -> Job:
    status = runs.read_json(job_dir / runs.STATUS)
    overrides = None
    saved = job_dir / ".hydra" / "overrides.yaml"
    if saved.is_file():
        try:
            overrides = OmegaConf.to_container(OmegaConf.load(saved))
        except Exception:  # noqa: BLE001 - a half-written file: fall back to status.json
            overrides = None
    if overrides is None and status:
        overrides = status.get("overrides")
    state, reason = effective_status(job_dir, status)
    metrics = runs.read_json(job_dir / runs.METRICS) if state == "ok" else None
    if state == "ok" and metrics is None:
        state, reason = "failed", "status ok but metrics.json is missing or unreadable"
    name, value = objective_from_metrics(metrics, None)
    if name is None and state == "ok" and status and status.get("objective"):
        name, value = status["objective"].get("name"), _number(status["objective"].get("value"))
    relative = job_dir.relative_to(sweep_dir).as_posix() if job_dir != sweep_dir else "."
    return Job(job_dir, relative, state, reason, clean_overrides(overrides), metrics, name, value)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Every directory under `sweep_dir` that a job ran in (it has status.json or .hydra/)."""
    found = set()
    for root, dirs, files in os.walk(sweep_dir):
        here = Path(root)
        if runs.STATUS in files or (".hydra" in dirs and (here / ".hydra" / "overrides.yaml").is_file()):
            if here != sweep_dir:
                found.add(here)
            dirs[:] = []  # a job dir holds no other jobs
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != runs.TENSORBOARD]
    return sorted(found)


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep will run, from its multirun.yaml (grid sweeps and Optuna)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        cfg = OmegaConf.load(path)
        sweeper = OmegaConf.select(cfg, "hydra.sweeper", default=None)
        target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
        if target.endswith("BasicSweeper"):
            task = [str(o) for o in OmegaConf.to_container(cfg.hydra.overrides.task)]
            return len(grid_jobs(task))
        if sweeper is not None and "n_trials" in sweeper:
            return int(sweeper.n_trials)
    except Exception:  # noqa: BLE001 - the count is a nicety
        return None
    return None


def grid_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of `overrides`, in its order (job i = list i)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]

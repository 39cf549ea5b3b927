"""Resumable sweeps: `aerun train -m <same sweep> resume=true hydra.sweep.dir=<dir>` (or
`resume=<dir>`). `prepare_multirun_overrides` (before Hydra) checks the directory and that
job numbers line up; `resolve_job_resume` (in each job) skips a finished job with its stored
objective, continues an interrupted one from its last.pt, and starts any other afresh.
"""

from __future__ import annotations

import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from aerun import overrides as ov
from aerun import runs
from aerun.errors import UserError
from aerun.resume import RESUMABLE_KEYS
from aerun.sweeps.jobs import clean_overrides, effective_status, grid_jobs, objective_from_metrics

log = logging.getLogger("aerun.sweep")


def prepare_multirun_overrides(overrides: list[str]) -> list[str]:
    """`-m ... resume=true hydra.sweep.dir=<dir>` or `-m ... resume=<dir>`: continue that sweep.

    Returns the overrides with `resume=true` and `hydra.sweep.dir=<dir>`; refuses (UserError)
    a directory that is not a sweep, a search sweeper, and a sweep whose job N would get
    other values than the job N already in the directory (job numbers must line up).
    """
    resume_override = ov.last_override(overrides, "resume")
    value = ov.parsed_value(resume_override) if resume_override else None
    if ov.is_off(value):
        return overrides
    sweep_override = ov.last_override(overrides, "hydra.sweep.dir")
    if ov.is_true(value):
        if sweep_override is None:
            raise UserError("resume=true with -m: also pass hydra.sweep.dir=<the sweep directory to continue>, "
                            "or pass resume=<sweep dir>")
        sweep_text = sweep_override.split("=", 1)[1]
        sweep_dir = Path(str(ov.parsed_value(sweep_override))).expanduser()
        must_exist = False  # the same command can be submitted again and again (cluster requeues)
    else:
        sweep_text = resume_override.split("=", 1)[1]
        sweep_dir = Path(str(value)).expanduser()
        if sweep_override is not None and Path(str(ov.parsed_value(sweep_override))).expanduser().resolve() \
                != sweep_dir.resolve():
            raise UserError(f"resume={value} and {sweep_override} name two directories; pass one of them")
        must_exist = True
    _check_sweep_dir(sweep_dir, value, must_exist)
    if _is_search(overrides):
        raise UserError("resume=true: a search sweeper (Optuna) samples new trials on every run, so its jobs "
                        "cannot be matched; continue a study with hydra.sweeper.storage=sqlite:///<file>.db "
                        "hydra.sweeper.study_name=<name> instead")
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in ("resume", "hydra.sweep.dir")]
    if sweep_dir.is_dir():
        _check_jobs_line_up(sweep_dir, kept)
    return [*kept, "resume=true", f"hydra.sweep.dir={sweep_text}"]


def _check_sweep_dir(sweep_dir: Path, value, must_exist: bool) -> None:
    key = "resume" if not ov.is_true(value) else "hydra.sweep.dir"
    if not sweep_dir.exists():
        if must_exist:
            raise UserError(f"{key}={sweep_dir}: no such directory; pass the sweep directory to continue "
                            f"(outputs/multirun/<date>/<time>)")
        log.info("resume: %s does not exist yet; starting the sweep there", sweep_dir)
        return
    if not sweep_dir.is_dir():
        raise UserError(f"{key}={sweep_dir}: not a directory; pass the sweep directory to continue")
    if (sweep_dir / runs.CONFIG_FILE).is_file() or (sweep_dir / runs.STATUS).is_file():
        raise UserError(f"{key}={sweep_dir}: this is a single run's directory, not a sweep's; continue it "
                        f"without -m: aerun train resume={sweep_dir}")


def _is_search(overrides: list[str]) -> bool:
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+")
        if key == "hparams_search" and not ov.is_off(value):
            return True
        if key == "hydra/sweeper" and value not in ("basic", ""):
            return True
    return False


def _check_jobs_line_up(sweep_dir: Path, overrides: list[str]) -> None:
    """Job N of this sweep must have the overrides job N had in `sweep_dir`."""
    try:
        jobs = grid_jobs([o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra")])
    except Exception:  # noqa: BLE001 - sweeps the basic sweeper cannot expand are checked per job
        return
    for num, job in enumerate(jobs):
        status = runs.read_json(sweep_dir / str(num) / runs.STATUS)
        if not status or status.get("overrides") is None:
            continue
        mismatch = _mismatch(status["overrides"], job)
        if mismatch:
            raise UserError(f"resume: job {num} in {sweep_dir} {mismatch}; resume with the same sweep values "
                            f"in the same order, or start a new sweep")


def _identity(overrides) -> list[str]:
    """The overrides that make a job what it is: less those a resume may change (trainer.max_epochs, ...)."""
    return [o for o in clean_overrides(overrides) if o.partition("=")[0].lstrip("+~") not in RESUMABLE_KEYS]


def _mismatch(old_overrides, new_overrides) -> str:
    """'' when two jobs' overrides agree, else what differs: 'ran `a=1`, not `a=2`'."""
    old, new = _identity(old_overrides), _identity(new_overrides)
    if sorted(old) == sorted(new):
        return ""
    only_old = " ".join(o for o in old if o not in new) or "(no such override)"
    only_new = " ".join(o for o in new if o not in old) or "(no such override)"
    return f"ran with `{only_old}`, not `{only_new}`"


@dataclass
class JobResume:
    """What a job of a resumed sweep does (see `resolve_job_resume`)."""

    skip: bool  # finished before: return `objective` without training
    resume: str | None  # the value train()'s cfg.resume must take: the job dir (continue last.pt) or None
    objective: float | None = None
    reason: str = ""


STALE_FILES = (runs.LAST, runs.BEST, runs.METRICS)


def resolve_job_resume(cfg, job_dir, overrides: list[str] | None = None) -> JobResume:
    """Decide how one job of a sweep runs: skip it, continue its last.pt, or train afresh.

    Only acts when `cfg.resume` is true (a `resume=true` sweep); otherwise returns
    `JobResume(skip=False, resume=cfg.resume)`, i.e. train as usual. `overrides` are the
    job's Hydra task overrides (default: HydraConfig's), compared with the ones the job
    ran with before: a job dir that holds another configuration is never overwritten.
    """
    value = cfg.get("resume")
    if not ov.is_true(value):
        return JobResume(skip=False, resume=value)
    job_dir = Path(job_dir)
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    status = runs.read_json(job_dir / runs.STATUS)
    if status is None and not (job_dir / runs.METRICS).is_file():
        return JobResume(skip=False, resume=None, reason="new job")
    if status is not None and status.get("overrides") is not None:
        mismatch = _mismatch(status["overrides"], overrides)
        if mismatch:
            raise UserError(f"resume: the run in {job_dir} {mismatch}; resume with the same sweep values in "
                            f"the same order, or start a new sweep")
    state, reason = effective_status(job_dir, status)
    if state == "running" and status.get("host") not in (None, socket.gethostname()):
        # Written on another node (a requeued cluster job): a launcher never runs a job twice at
        # once, so the earlier attempt is gone.
        state = "interrupted"
    if state == "running":
        raise UserError(f"resume: {job_dir} is still running{' (' + reason + ')' if reason else ''}; "
                        f"wait for it or stop it first")
    if state == "ok":
        metrics = runs.read_json(job_dir / runs.METRICS) or {}
        if int(metrics.get("epochs") or 0) < int(cfg.trainer.max_epochs) and (job_dir / runs.LAST).is_file():
            log.info("job %s finished %s epochs; trainer.max_epochs=%s: continuing from %s", job_dir.name,
                     metrics.get("epochs"), cfg.trainer.max_epochs, job_dir / runs.LAST)
            return JobResume(skip=False, resume=str(job_dir), reason="more epochs")
        name, objective = objective_from_metrics(metrics, cfg.get("optimized_metric", "auto"))
        if objective is None:
            raise UserError(f"optimized_metric={name}: no such metric in {job_dir / runs.METRICS}")
        log.info("job %s finished before (%s = %.6g): skipped", job_dir.name, name, objective)
        return JobResume(skip=True, resume=None, objective=objective, reason="finished before")
    if state == "interrupted" and (job_dir / runs.LAST).is_file():
        log.info("job %s was interrupted: continuing from %s", job_dir.name, job_dir / runs.LAST)
        return JobResume(skip=False, resume=str(job_dir), reason="continues last.pt")
    # Failed (a bad value, divergence, a crash) or stopped before its first checkpoint: the
    # same configuration runs again from scratch; its earlier attempt's outputs go first.
    removed = [name for name in STALE_FILES if (job_dir / name).is_file()]
    for name in removed:
        (job_dir / name).unlink()
    if (job_dir / runs.TENSORBOARD).is_dir():
        shutil.rmtree(job_dir / runs.TENSORBOARD)
        removed.append(runs.TENSORBOARD + "/")
    log.info("job %s was %s%s: starting afresh%s", job_dir.name, state, f" ({reason})" if reason else "",
             f" (removed the earlier attempt's {', '.join(removed)})" if removed else "")
    return JobResume(skip=False, resume=None, reason=f"was {state}: starts afresh")

"""From checked overrides to a finished command: the run directory, Hydra, and the task.

`launch` claims a fresh run directory (or names the sweep's), hands over to `hydra.main`,
and runs the command module's `run(cfg, job)` inside it. A job's failure is handled here
once for every command: in a sweep it becomes that job's failed row and the sweep goes on;
in a single run it propagates to the exit policy (`aerun.exits`), after the directory made
for a run that never saved weights is removed again (a refused run leaves nothing behind).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aerun import overrides as ov
from aerun.errors import Interrupted, ResumeRefused, UserError
from aerun.precheck import CONFIG_DIR

log = logging.getLogger("aerun.launch")
PROG = "aerun"
STATUS_FILE = "status.json"  # aerun.runs.STATUS (not imported here: launch stays light)
_fresh_dirs: set[str] = set()  # run directories this process created for a single run
_made_parents: dict[str, list[Path]] = {}  # a fresh run directory -> the folders above it made for it


class JobFailed(BaseException):
    """Carries a single run's exception out through Hydra (which would print its own
    traceback for an Exception) to aerun's exit policy."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


@dataclass
class Job:
    """What a command's `run(cfg, job)` gets besides its config."""

    out_dir: Path  # the command's own run directory (Hydra's runtime.output_dir)
    overrides: list[str] = field(default_factory=list)  # the job's task overrides
    multirun: bool = False
    num: int | None = None  # the job's number in a sweep


def claim_run_dir(base: str = "outputs", multirun: bool = False) -> str:
    """A new directory that no other run can share: mkdir fails if another run took the name."""
    from aerun import faults

    faults.at("run_dir")
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    parent = Path(base) / ("multirun" if multirun else "") / stamp
    for attempt in range(1000):
        path = parent if attempt == 0 else Path(f"{parent}-{attempt}")
        try:
            missing = _missing_parents(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            if not multirun:
                _fresh_dirs.add(str(path.resolve()))
                _made_parents[str(path.resolve())] = missing
            return str(path)
        except FileExistsError:
            continue
    raise UserError(f"could not create a fresh run directory under {parent.parent}")


def _missing_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first (what making it will make)."""
    missing = []
    for parent in path.resolve().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def refuse_a_file_in_the_path(path: Path, key: str) -> None:
    """A run directory that is, or lies inside, an existing file cannot be made (Hydra's mkdir
    would fail with EEXIST / ENOTDIR after the command had started)."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == path else f"lies inside {part}, which is a file"
                raise UserError(f"{key}={path}: {what}; name a folder (new or a run's)")
            return


def choose_run_dir(overrides: list[str], multirun: bool, keep_runs: bool = False) -> list[str]:
    """The overrides with a run (or sweep) directory; a single run's is claimed fresh. With
    `keep_runs` (train), a named folder that holds a run or a sweep already is refused unless
    the command resumes it: training into it would overwrite its checkpoints."""
    resuming = ov.last_value(overrides, "resume") not in (None, "null", "false", "False")
    if multirun:
        if not ov.has(overrides, "hydra.sweep.dir"):
            overrides = [*overrides, f"hydra.sweep.dir={claim_run_dir(multirun=True)}"]
        else:
            given = ov.last_value(overrides, "hydra.sweep.dir")
            path = Path(str(ov.parsed_value(f"hydra.sweep.dir={given}"))).expanduser()
            refuse_a_file_in_the_path(path, "hydra.sweep.dir")
            if keep_runs and not resuming and path.is_dir() and any(path.glob(f"*/{STATUS_FILE}")):
                raise UserError(f"hydra.sweep.dir={given}: holds a sweep already; continue it with resume=true (the "
                                f"same sweep values), or name a new folder")
        return overrides
    given = ov.last_value(overrides, "hydra.run.dir")
    if given is None:
        return [*overrides, f"hydra.run.dir={claim_run_dir()}"]
    path = Path(str(ov.parsed_value(f"hydra.run.dir={given}"))).expanduser()
    refuse_a_file_in_the_path(path, "hydra.run.dir")
    if path.exists():
        from aerun.runs import refuse_if_in_use

        refuse_if_in_use(path)  # before Hydra writes its files there
        if keep_runs and not resuming and path.is_dir() and ((path / STATUS_FILE).is_file() or any(path.glob("*.pt"))):
            raise UserError(f"hydra.run.dir={given}: holds a run already; continue it with aerun train "
                            f"resume={given}, or name a new folder")
    else:  # made for this run: removed again if the run never starts
        _fresh_dirs.add(str(path.resolve()))
        _made_parents[str(path.resolve())] = _missing_parents(path)
    return overrides


def launch(command: str, module, flags: list[str], overrides: list[str]) -> int:
    """Run `module` under `hydra.main`; returns the exit status (1 when a sweep had failures)."""
    import hydra

    from aerun.config import register_configs
    from aerun.sweeps import callback

    register_configs()
    # Exceptions reach aerun's exit policy whole, instead of Hydra's traceback printer.
    user_value = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    result = {}

    def task(cfg):
        result["value"] = run_task(module, cfg)
        return result["value"]

    task.__module__ = "aerun"  # Hydra names the job (and its log file) after the function
    task.__name__ = command
    saved_argv = sys.argv
    sys.argv = [f"{PROG} {command}", *flags, *overrides]
    callback.last_sweep_problems = None
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name=command, version_base="1.3")(task)()
    except JobFailed as failed:
        raise failed.error from None
    finally:
        sys.argv = saved_argv
        if user_value is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_value
    # A sweep runs every job even when some fail; its exit status still says whether all succeeded.
    return 1 if callback.last_sweep_problems else 0


def run_task(module, cfg):
    """One job: run the command; a sweep job's failure is its own, a single run's propagates."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job = Job(Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task),
              hydra_cfg.mode.name == "MULTIRUN", hydra_cfg.job.get("num"))
    from aerun.signals import POLICY

    try:
        if getattr(module, "USES_TORCH", True):
            with POLICY.deferred():  # torch, if the command's module has not imported it yet (see aerun.signals)
                import torch  # noqa: F401
        POLICY.raise_pending()
        return module.run(cfg, job)
    except Interrupted:
        _forget_if_empty(job)
        raise
    except Exception as exc:  # noqa: BLE001 - each kind is told apart by aerun.exits
        if not job.multirun:
            _forget_if_empty(job)
            raise JobFailed(exc) from exc
        _job_failed(job, exc)
        return None


def _job_failed(job: Job, exc: Exception) -> None:
    """A sweep job that failed: its status says why, its log has the traceback, the sweep goes on."""
    from aerun import exits
    from aerun.sweeps.callback import record_failure

    code, line = exits.classify(exc)
    if isinstance(exc, ResumeRefused):  # the job stays as it was: fix the cause and resume again
        exits.say(f"job {job.num} not resumed: {line}")
        return
    record_failure(job.out_dir, exc, line)
    if code == 2:
        exits.say(f"job {job.num} failed: {line}")
    else:
        exits.say(f"job {job.num} failed: {line} (traceback in {job.out_dir / 'aerun.log'}); the other jobs go on")


def _forget_if_empty(job: Job) -> None:
    """Remove a directory made for this run if the run never saved weights (and its parent
    date folder when that is left empty), so a run that never started leaves nothing behind."""
    out = job.out_dir.resolve()
    if str(out) not in _fresh_dirs or not out.is_dir() or any(out.glob("*.pt")):
        return
    logging.shutdown()  # Hydra's log file lives in there
    shutil.rmtree(out, ignore_errors=True)
    _fresh_dirs.discard(str(out))
    for parent in _made_parents.pop(str(out), []):  # outputs/<date>, and outputs/ itself if this run made it
        try:
            if any(parent.iterdir()):
                break
            parent.rmdir()
        except OSError:  # gone, not ours to read, or just taken by another run: leave it
            break

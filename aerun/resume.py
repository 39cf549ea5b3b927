"""`aerun train resume=<run dir>`: continue a run in its own directory, from its last.pt.

Everything is checked before anything is written: the directory, its checkpoint, that
no other process holds it, and that the config is the run's own (only `trainer.max_epochs`
and logging options may change). A refused resume leaves the run exactly as it was.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from aerun import overrides as ov
from aerun import runs
from aerun.config import flatten
from aerun.errors import ResumeRefused, UserError

log = logging.getLogger("aerun.resume")

# Options that may differ when a run is resumed: they change neither the model nor the data.
RESUMABLE_KEYS = {"resume", "trainer.max_epochs", "trainer.progress", "trainer.log_every_n_steps",
                  "trainer.checkpoint_every_n_steps", "trainer.images_every_n_epochs", "trainer.num_threads",
                  "trainer.device", "trainer.ddp_timeout_s", "trainer.eval_batch_size", "trainer.train_eval_size", "trainer.channels_last",
                  "optimized_metric"}
IGNORED_PREFIXES = ("experiment", "debug", "hparams_search", "logger")  # where a run logs may change


def requested(overrides: list[str]) -> str | None:
    """The run directory `resume=<dir>` names, or None."""
    value = ov.last_value(overrides, "resume")
    return None if ov.is_off(value) else value


def prepare_overrides(overrides: list[str]) -> list[str]:
    """`resume=<run dir>`: the run's own saved overrides, then the user's, into that directory."""
    resume = requested(overrides)
    if resume is None:
        return overrides
    run = runs.check_run_dir(resume, key="resume", need_checkpoint=runs.LAST)
    runs.refuse_if_in_use(run)
    saved = run / ".hydra" / "overrides.yaml"
    previous = []
    if saved.is_file():
        from omegaconf import OmegaConf

        previous = ov.without([str(o) for o in OmegaConf.to_container(OmegaConf.load(saved))],
                              "hydra", "resume", "trainer.kill_at_step")  # kill_at_step: an old test hook
    return previous + _pinned_from_the_environment(run, previous + overrides) + \
        ov.without(overrides, "hydra.run.dir") + [f"hydra.run.dir={run}"]


def _pinned_from_the_environment(run: Path, given: list[str]) -> list[str]:
    """data.root as the run resolved it (from $AERUN_DATA_ROOT, or the default `data`) when no
    override names it: resuming without that variable, or with another, reads the same data."""
    root = environment_data_root(run, given)
    return [] if root is None else [f"data.root={quoted(root)}"]


def environment_data_root(run: Path, given: list[str]) -> str | None:
    """The run's data.root if it came from $AERUN_DATA_ROOT or the default (a built-in dataset's
    root, named by no override), else None."""
    if ov.has(given, "data.root"):
        return None
    try:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))["data"]
    except Exception:  # noqa: BLE001 - an older run without config.yaml: check() compares with last.pt
        return None
    if data.get("name") in ("folder", "npz") or not isinstance(data.get("root"), str) or not data["root"]:
        return None  # own data: its root follows data.path, which the saved overrides name
    return data["root"]


def quoted(value: str) -> str:
    """A Hydra override value that stays one string whatever it holds (~, spaces, quotes, é)."""
    # Hydra: a backslash escapes only a quote, or the backslashes before one (and before the end)
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


def check(cfg, run_dir: Path | None = None) -> None:
    """Refuse (UserError) a resume whose config differs from the run's, or that points
    hydra.run.dir elsewhere; reads last.pt's config and writes nothing."""
    from aerun.checkpoint import load_checkpoint
    from aerun.config import to_plain

    plain = to_plain(cfg)
    resume_dir = runs.check_run_dir(plain["resume"], key="resume", need_checkpoint=runs.LAST)
    if run_dir is not None and resume_dir.resolve() != Path(run_dir).resolve():
        raise ResumeRefused(f"resume={plain['resume']}: resuming writes into that run directory; "
                            f"do not also set hydra.run.dir")
    saved = runs.upgrade_config(load_checkpoint(resume_dir / runs.LAST, map_location="cpu")["config"])
    changed = config_differences(saved, plain)
    if changed:
        raise ResumeRefused(f"resume: the config differs from the run's in {', '.join(changed)}; only "
                            f"trainer.max_epochs and logging options may change on resume")



def config_differences(old: dict, new: dict, allowed=RESUMABLE_KEYS) -> list[str]:
    """Keys whose values differ between two plain configs, ignoring `allowed` ones."""
    a, b = flatten(old), flatten(new)
    return [f"{k} ({a.get(k, '<unset>')} -> {b.get(k, '<unset>')})" for k in sorted(set(a) | set(b))
            if k not in allowed and not k.startswith(IGNORED_PREFIXES) and a.get(k) != b.get(k)]

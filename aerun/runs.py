"""Run directories: what `aerun train` leaves, and how other commands read it back.

A run directory holds `config.yaml` (the resolved config), `last.pt` and `best.pt`,
`metrics.json`, `status.json` and `tensorboard/`. Commands that read a run never
write into it, except TensorBoard entries under its `tensorboard/`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from aerun.errors import UserError

log = logging.getLogger("aerun.runs")

CONFIG_FILE = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
WEIGHTS = (BEST, LAST)  # need_checkpoint=WEIGHTS: either will do (load_run falls back to last.pt)
METRICS = "metrics.json"
STATUS = "status.json"
TENSORBOARD = "tensorboard"


def check_run_dir(path: str | os.PathLike | None, key: str = "run",
                  need_checkpoint: str | tuple[str, ...] | None = BEST) -> Path:
    """A run directory written by `aerun train`, or a one-line UserError saying what is wrong."""
    if path is None or str(path) in ("", "None", "???"):
        raise UserError(f"{key}: missing; pass the run directory of a training run, e.g. {key}=outputs/2026-01-01/12-00-00")
    run = Path(str(path)).expanduser()
    if not run.exists():
        raise UserError(f"{key}={path}: no such directory")
    if not run.is_dir():
        raise UserError(f"{key}={path}: not a directory; pass the run directory that holds {CONFIG_FILE} and {BEST}")
    if not (run / CONFIG_FILE).is_file():
        inside = runs_below(run)
        if inside:  # a date folder or a sweep's folder: name the runs it holds
            raise UserError(f"{key}={path}: not a run directory itself, but it holds {len(inside)} run(s); "
                            f"pass one of them, e.g. the newest: {key}={inside[-1]}")
        raise UserError(f"{key}={path}: not an aerun run directory (no {CONFIG_FILE}); "
                        f"pass a directory written by 'aerun train'")
    wanted = (need_checkpoint,) if isinstance(need_checkpoint, str) else tuple(need_checkpoint or ())
    if wanted and not any((run / name).is_file() for name in wanted):
        others = [name for name in (BEST, LAST) if (run / name).is_file()]
        hint = f" (it has {', '.join(others)})" if others else " (the run saved no weights yet)"
        raise UserError(f"{key}={path}: no {' or '.join(wanted)} in this run directory{hint}")
    return run


def runs_below(folder: Path, depth: int = 3) -> list[Path]:
    """Run directories (config.yaml and a checkpoint) up to `depth` levels below `folder`, oldest
    first: what a user who passed a date folder or a sweep's folder meant."""
    def subfolders(parent: Path) -> list[Path]:
        try:
            return [c for c in sorted(parent.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        except OSError:  # unreadable: nothing to suggest from there
            return []

    found, level = [], [folder]
    for _ in range(depth):
        level = [child for parent in level for child in subfolders(parent)]
        found += [d for d in level if (d / CONFIG_FILE).is_file() and any((d / n).is_file() for n in (BEST, LAST))]
    return sorted(found, key=lambda d: d.stat().st_mtime)


def read_run_config(run: Path) -> dict:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(run / CONFIG_FILE), resolve=False)
    except Exception as exc:  # noqa: BLE001 - any YAML problem is the user's file
        raise UserError(f"{run / CONFIG_FILE} is not a readable config ({str(exc).splitlines()[0]})") from None


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def build_model(model_cfg: dict, input_shape):
    """Instantiate the model class named by `_target_` with the config's arguments."""
    from hydra.utils import instantiate

    try:
        return instantiate(dict(model_cfg), input_shape=tuple(input_shape), _convert_="all")
    except Exception as exc:  # noqa: BLE001 - a bad _target_ or argument is a config problem
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model: cannot build {model_cfg.get('_target_')}: {message}") from None


def data_root(run: Path, saved_root: str, override: str | None = None) -> str:
    """Where to read the run's dataset: data.root if the user gave one, else the run's own.

    A relative data.root (`data.root=../shared/datasets`) was relative to the folder
    `aerun train` ran in, which Hydra records in .hydra/hydra.yaml; it is read from there
    while that folder has it (so the latent commands work from any folder), else from here."""
    if override is not None:
        return str(override)
    root = Path(str(saved_root)).expanduser()
    if root.is_absolute():
        return str(saved_root)
    try:
        from omegaconf import OmegaConf

        train_cwd = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.cwd
    except Exception:  # noqa: BLE001 - no or unreadable hydra.yaml: relative to here, as given
        return str(saved_root)
    trained_from = Path(str(train_cwd)) / root
    if trained_from.exists() and trained_from.resolve() != root.resolve():
        log.info("the run's data.root=%s is relative to %s, where it was trained: reading %s",
                 saved_root, train_cwd, trained_from)
        return str(trained_from)
    return str(saved_root)


@dataclass
class LoadedRun:
    path: Path
    config: dict  # the run's resolved config, plain Python
    model: object  # an aerun.models.Autoencoder in eval mode
    checkpoint: dict
    input_shape: tuple[int, int, int]

    @property
    def recon_loss(self) -> str:
        return self.config.get("loss") or self.model.default_loss


def load_run(path, device="cpu", which: str = BEST, key: str = "run") -> LoadedRun:
    """Rebuild a trained model from its run directory on `device` (CPU works for GPU runs).

    A run interrupted before its first epoch ended has no best.pt yet; its last.pt is used
    instead, with a warning, so the latent commands work on any run that saved weights."""
    from aerun.checkpoint import load_checkpoint

    run = check_run_dir(path, key=key, need_checkpoint=WEIGHTS if which == BEST else which)
    if which == BEST and not (run / BEST).is_file():
        log.warning("%s has no %s yet (the run stopped before its first epoch ended): using %s", run, BEST, LAST)
        which = LAST
    checkpoint = load_checkpoint(run / which, map_location=device)
    config = checkpoint.get("config") or read_run_config(run)
    input_shape = checkpoint.get("input_shape")
    if input_shape is None:
        raise UserError(f"{run / which} has no input_shape; it was not written by this version of aerun")
    model = build_model(config["model"], input_shape)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise UserError(f"{run / which} does not fit the model in {run / CONFIG_FILE} "
                        f"({str(exc).strip().splitlines()[0]}); is it a checkpoint of another run?") from None
    model.to(device).eval()
    return LoadedRun(run, config, model, checkpoint, tuple(input_shape))

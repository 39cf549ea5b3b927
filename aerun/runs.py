"""Run directories: what `aerun train` leaves, how its lifecycle is recorded (the lock, the
status file), and how other commands read a run back.

A run directory holds `config.yaml` (the resolved config), `last.pt` and `best.pt`,
`metrics.json`, `status.json` and `tensorboard/`. Commands that read a run never
write into it, except TensorBoard entries under its `tensorboard/`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aerun.errors import AerunError, Interrupted, UserError

log = logging.getLogger("aerun.runs")

CONFIG_FILE = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
WEIGHTS = (BEST, LAST)  # need_checkpoint=WEIGHTS: either will do (load_run falls back to last.pt)
METRICS = "metrics.json"
STATUS = "status.json"
TENSORBOARD = "tensorboard"
LOCK = ".lock"


# ----------------------------------------------------------------------------- lifecycle
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def lock_holder(run_dir: Path) -> int | None:
    """The pid of a live process that holds `run_dir`'s lock, or None."""
    try:
        pid = int((Path(run_dir) / LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid and pid != os.getpid() and pid_alive(pid) else None


def refuse_if_in_use(run_dir: Path) -> None:
    pid = lock_holder(run_dir)
    if pid is not None:
        raise UserError(f"run directory {run_dir} is in use by another aerun process (pid {pid}); "
                        f"wait for it or choose another directory")


class RunLock:
    """One process per run directory: a second `aerun train` on it is refused."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                refuse_if_in_use(self.path.parent)
                self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise UserError(f"could not lock run directory {self.path.parent}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def write_status(run_dir: Path, status: str, **extra) -> None:
    """status.json: running / ok / failed / interrupted, with what the run wants to say."""
    from aerun.io import write_json

    previous = read_json(Path(run_dir) / STATUS) or {}
    previous.update(extra, status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(Path(run_dir) / STATUS, previous)


class Lifecycle:
    """What `lifecycle` records when the run ends well."""

    objective: dict | None = None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, (UserError, Interrupted)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def lifecycle(run_dir: Path, overrides: list[str] | None):
    """Hold the run directory (lock) and keep status.json honest however the run ends:
    running while it trains, then ok, failed (with the one-line reason) or interrupted."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        write_status(run_dir, "running", overrides=overrides or [], pid=os.getpid(), host=socket.gethostname())
        life = Lifecycle()
        try:
            yield life
        except (Interrupted, KeyboardInterrupt) as exc:
            _final_status(run_dir, "interrupted", reason=one_line(exc) or "interrupted")
            _add_resume_hint(exc, run_dir, "")
            raise
        except BaseException as exc:
            from aerun.exits import classify

            _final_status(run_dir, "failed", reason=classify(exc)[1][:500])
            if not isinstance(exc, UserError):  # a disk, memory or a bug: the same run can go on
                _add_resume_hint(exc, run_dir, "fix that, then ")
            raise
        _final_status(run_dir, "ok", objective=life.objective)


def _add_resume_hint(exc: BaseException, run_dir: Path, prefix: str) -> None:
    if (run_dir / LAST).is_file():
        try:
            exc.hint = f"; {run_dir / LAST} is whole: {prefix}resume with aerun train resume={run_dir}"
        except AttributeError:  # an exception type that takes no attributes
            pass


def _final_status(run_dir: Path, status: str, **extra) -> None:
    """The last status write; a disk that refuses it must not hide why the run ended."""
    try:
        write_status(run_dir, status, **extra)
    except (OSError, AerunError) as exc:
        log.warning("could not record status %s in %s: %s", status, run_dir / STATUS, exc)


# ----------------------------------------------------------------------------- reading runs
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



# ----------------------------------------------------------------------------- stored configs
OLD_OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD"}
OLD_SCHEDULERS = {  # aerun-checkpoint-v1's optim.scheduler names and the keys that went with them
    "none": {"_target_": None, "_partial_": True, "interval": "epoch"},
    "cosine": {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "interval": "step",
               "T_max": None, "eta_min": ("min_lr", 0.0)},
    "step": {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "interval": "epoch",
             "step_size": ("step_size_epochs", 10), "gamma": ("gamma", 0.1)},
}
VARIATIONAL_TARGETS = ("aerun.models.VAE", "aerun.models.ConvVAE")
CD_TARGETS = ("aerun.models.RBM", "aerun.models.DBN")


def upgrade_config(config: dict) -> dict:
    """A run config as this version writes it. Runs trained before the optimizer became a
    `_target_` (aerun-checkpoint-v1) named it `optim.name` with flat scheduler keys, carried
    the test-only trainer.kill_at_step, and stored an unused model.sparsity for VAEs; RBMs and
    DBNs trained before model.reconstruction sampled the negative phase's visible state."""
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    optim = config.get("optim") or {}
    if "name" in optim and "_target_" not in optim:
        old = dict(optim)
        optim = {"_target_": OLD_OPTIMIZERS[old["name"]], "lr": old["lr"], "weight_decay": old["weight_decay"],
                 "l1_weight": old.get("l1_weight", 0.0)}
        if old["name"] == "sgd":
            optim["momentum"] = old.get("momentum", 0.9)
        scheduler = dict(OLD_SCHEDULERS[old.get("scheduler", "none")])
        for key, value in scheduler.items():
            if isinstance(value, tuple):
                scheduler[key] = old.get(value[0], value[1])
        optim["scheduler"] = scheduler
        config["optim"] = optim
    trainer = config.get("trainer") or {}
    trainer.pop("kill_at_step", None)
    model = config.get("model") or {}
    if model.get("_target_") in CD_TARGETS:  # before model.reconstruction, CD sampled the last visible state
        model.setdefault("reconstruction", "auto" if model.get("persistent") else "binary")  # auto: PCD samples
    _fill_new_keys(config)
    model = config.get("model") or {}
    if model.get("_target_") in VARIATIONAL_TARGETS:
        model.pop("sparsity", None)
        model.setdefault("conditional", False)
    return config


def _fill_new_keys(config: dict) -> None:
    """Keys this version added get their defaults, so an older run's config compares equal to
    what it means today (a resume is refused only for real differences)."""
    from omegaconf import OmegaConf

    from aerun.config.models import MODEL_SCHEMAS
    from aerun.config.schema import DataConfig, TrainerConfig

    by_target = {schema._target_: schema for schema in MODEL_SCHEMAS.values()}
    schemas = {"data": DataConfig, "trainer": TrainerConfig, "model": by_target.get((config.get("model") or {}).get("_target_"))}
    for section, schema in schemas.items():
        if schema is None or not isinstance(config.get(section), dict):
            continue
        defaults = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False, enum_to_str=True)
        for key, value in defaults.items():
            if key not in config[section] and not key.startswith("_") and not (isinstance(value, str) and "${" in value):
                config[section][key] = value


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
    from aerun.build import build_model
    from aerun.checkpoint import load_checkpoint

    run = check_run_dir(path, key=key, need_checkpoint=WEIGHTS if which == BEST else which)
    if which == BEST and not (run / BEST).is_file():
        log.warning("%s has no %s (the run stopped before its first epoch ended, or the file was removed): "
                    "using %s", run, BEST, LAST)
        which = LAST
    checkpoint = load_checkpoint(run / which, map_location=device)
    config = checkpoint.get("config") or read_run_config(run)
    input_shape = checkpoint.get("input_shape")
    if input_shape is None:
        raise UserError(f"{run / which} has no input_shape; it was not written by this version of aerun")
    config = upgrade_config(config)
    model = build_model(config["model"], input_shape, num_classes=checkpoint.get("num_classes"))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise UserError(f"{run / which} does not fit the model in {run / CONFIG_FILE} "
                        f"({str(exc).strip().splitlines()[0]}); is it a checkpoint of another run?") from None
    model.to(device).eval()
    return LoadedRun(run, config, model, checkpoint, tuple(input_shape))

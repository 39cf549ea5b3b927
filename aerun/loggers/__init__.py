"""Experiment trackers for training runs: `logger=tensorboard` (default), `csv`, `mlflow`,
`wandb`, or several (`logger=[tensorboard,csv]`). Each is one module with a `Logger` class;
the optional ones name their pip extra when their package is missing."""

from __future__ import annotations

import importlib
import importlib.util

from aerun.errors import UserError
from aerun.loggers.base import Logger, Loggers, RunInfo

# name -> (module, class, the package it needs, the pip extra that installs it)
LOGGERS = {
    "tensorboard": ("aerun.loggers.tensorboard", "TensorBoardLogger", "tensorboard", None),
    "csv": ("aerun.loggers.csv", "CsvLogger", None, None),
    "mlflow": ("aerun.loggers.mlflow", "MlflowLogger", "mlflow", "mlflow"),
    "wandb": ("aerun.loggers.wandb", "WandbLogger", "wandb", "wandb"),
}

__all__ = ["LOGGERS", "Logger", "Loggers", "RunInfo", "build_loggers", "check_loggers", "chosen"]


def chosen(logger_cfg) -> list[str]:
    """The trackers a run's `logger` config turns on (a key whose value is not null)."""
    if logger_cfg is None:
        return []
    return [name for name in LOGGERS if logger_cfg.get(name) is not None]


def check_loggers(logger_cfg) -> list[str]:
    """Refuse, before anything is written, a tracker whose package is not installed."""
    names = chosen(logger_cfg)
    for name in names:
        package, extra = LOGGERS[name][2], LOGGERS[name][3]
        if package is not None and importlib.util.find_spec(package) is None:
            hint = f"pip install 'aerun[{extra}]'" if extra else f"pip install {package}"
            raise UserError(f"logger={name} needs the {package} package, which is not installed: {hint} "
                            f"(or leave {name} out of logger=)")
    return names


def build_loggers(logger_cfg: dict, info: RunInfo) -> Loggers:
    """The chosen trackers, opened. One that fails to open is left out with a warning."""
    opened = Loggers([])
    for name in chosen(logger_cfg):
        module, cls, _, _ = LOGGERS[name]
        options = dict(logger_cfg.get(name) or {})
        try:
            opened.loggers.append(getattr(importlib.import_module(module), cls)(
                RunInfo(info.run_dir, info.name, info.params, info.purge_step, options, info.leading)))
        except Exception as exc:  # noqa: BLE001 - a tracker must never stop the training run
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            from aerun.loggers.base import log

            log.warning("logger %s did not start (%s: %s); the run goes on without it", name,
                        type(exc).__name__, first[:300])
    return opened

"""`aerun judge data=<dataset> data.root=<folder>`: the judge classifier of a dataset, trained once
and cached (aerun.analysis.judge); prints its test accuracy and where it is cached."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from aerun.config import to_plain
from aerun.errors import UserError

log = logging.getLogger("aerun.judge")


def prepare_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """The judge is written to the cache: Hydra runs here and makes no run directory."""
    from aerun import overrides as ov

    return overrides if ov.has(overrides, "hydra.run.dir") else [*overrides, "hydra.run.dir=."]


def validate(cfg: DictConfig) -> None:
    from aerun.data import check_config_available

    if cfg.judge.epochs < 1:
        raise UserError(f"judge.epochs: must be >= 1, got {cfg.judge.epochs}")
    check_config_available(cfg.data)


def run(cfg: DictConfig, job):
    from aerun.devices import resolve_device
    from aerun.latent.judging import judge_for

    validate(cfg)
    plain = to_plain(cfg)
    device = resolve_device(plain["device"], key="device")
    _, info, dataset = judge_for(plain["data"], plain["seed"], plain["data"]["root"], device,
                                 cache_dir=plain["judge"]["cache_dir"], force=plain["judge"]["force"],
                                 epochs=plain["judge"]["epochs"])
    print(f"judge for {dataset.name} ({'trained now' if info['trained_now'] else 'cached'}): test accuracy "
          f"{info['test_accuracy']:.4f} on {len(dataset.test)} images; {info['cache_path']}")
    return info["test_accuracy"]

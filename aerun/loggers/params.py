"""What a run is called and which of its settings a tracker shows, in what order.

A tracker's run list and hyper-parameter table are read by people comparing runs: the keys
that vary in a sweep come first, then the ones that define an experiment (model, latent size,
learning rate, batch size, beta, noise, dataset, seed); paths, unset limits and settings that
only say how a run executes (device, progress bar, logging cadence) are left out.
"""

from __future__ import annotations

import re

from aerun.config.validate import flatten

DEFINING = ("model", "model.latent_dim", "optim", "optim.lr", "trainer.batch_size", "model.beta", "data.noise.kind",
            "data.noise.level", "data.name", "seed")
SECTIONS = ("model", "optim", "data", "trainer", "loss")  # the rest of each, in this order, after DEFINING
LEFT_OUT = re.compile(
    r"(^|\.)(_target_|_partial_|root|path|download|progress|device|log_every_n_steps|checkpoint_every_n_steps|"
    r"images_every_n_epochs|eval_batch_size|num_workers|ddp_timeout_s|compile|channels_last|strategy|"
    r"devices|train_eval_size|images_key|labels_key|class_names_key)$")
NOT_SETTINGS = ("hydra.", "logger", "resume", "run", "experiment", "debug", "hparams_search")
MAX_NAME = 96


def _override_keys(overrides: list[str]) -> list[tuple[str, str]]:
    """(key, value) of each `key=value` override that sets a setting (not hydra.*, not a path);
    a key given twice (a resumed run: its saved overrides, then the new ones) keeps its last value."""
    pairs: dict[str, str] = {}
    for text in overrides:
        key, sep, value = text.lstrip("+~").partition("=")
        if not sep or key.startswith(NOT_SETTINGS) or LEFT_OUT.search(key):
            continue
        pairs[key.replace("/", ".")] = value
    return list(pairs.items())


GENERIC = {"kind", "level", "name", "size", "weight", "type"}  # say too little alone: noise.kind


def _short(key: str, keys: list[str]) -> str:
    """The last part of a dotted key when no other key ends the same way (lr, latent_dim); the
    last two for a generic word (noise.kind)."""
    parts = key.split(".")
    last = ".".join(parts[-2:]) if parts[-1] in GENERIC else parts[-1]
    return last if sum(k == last or k.endswith("." + last) for k in keys) == 1 else key


def run_name(model_choice: str, overrides: list[str]) -> str:
    """A name that reads in a run list: the model, then the overrides that set something
    ("vae,latent_dim=2,lr=0.0003"); safe as a folder name (no spaces, no slashes)."""
    pairs = [(k, v) for k, v in _override_keys(overrides) if k != "model"]
    keys = [k for k, _ in pairs]
    parts = [model_choice] + [f"{_short(k, keys)}={v}" for k, v in pairs]
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", ",".join(parts)) or "run"
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "~"


def experiment_params(plain: dict, model_choice: str, overrides: list[str]) -> dict:
    """{dotted key: scalar} in reading order: the overridden keys, DEFINING, then the rest of
    each section; unset (null) values, paths and execution-only settings left out."""
    flat = {"model": model_choice, **flatten({s: plain[s] for s in SECTIONS if s in plain}), "seed": plain.get("seed")}
    optim = plain.get("optim") or {}
    flat["optim"] = str(optim.get("_target_", "")).rpartition(".")[2] or None  # torch.optim.Adam -> Adam
    scheduler = optim.get("scheduler") or {}
    flat["optim.scheduler"] = str(scheduler.get("_target_") or "none").rpartition(".")[2]
    order = [k for k, _ in _override_keys(overrides)] + list(DEFINING) + list(flat)
    params = {}
    for key in order:
        if key in params or key not in flat or LEFT_OUT.search(key):
            continue
        value = flat[key]
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
            value = int(value)  # data.val_size=64 is a count: 64, not 64.0
        params[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return params


def leading_keys(params: dict, overrides: list[str]) -> set[str]:
    """The keys a tracker should show first: what this run (or sweep job) overrode, and DEFINING."""
    return ({k for k, _ in _override_keys(overrides)} | set(DEFINING)) & set(params)

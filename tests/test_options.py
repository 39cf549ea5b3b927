"""No option is ever ignored: every key of every schema, set to another valid value, either
changes what a run does (its numbers, weights, optimizer state, files or logs) or is refused
with one line. Walked key by key for every model family (the full walk is marked slow; the
default suite walks mlp_ae)."""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aerun.config import flatten, to_plain
from aerun.errors import UserError
from tests.conftest import compose

FAMILIES = ["mlp_ae", "linear_ae", "shallow_ae", "cnn_ae", "vae", "conv_vae", "svae", "vaegan", "stacked_ae",
            "seq_ae", "seq_vae", "rbm", "dbn"]
# Small versions where a family's defaults are large or staged, so every walk is seconds.
FAMILY_OVERRIDES = {
    "svae": ["model.hidden=[64]"], "vaegan": ["model.channels=[8,16]", "model.discriminator_channels=[8,16]"],
    "stacked_ae": ["model.layers=[64,32]"], "seq_ae": ["model.hidden=32"], "seq_vae": ["model.hidden=32"],
    "rbm": ["model.hidden_units=16", "optim=sgd", "optim.lr=0.05"],
    "dbn": ["model.layers=[16,8]", "model.latent_dim=8", "model.epochs_per_layer=1", "trainer.max_epochs=2",
            "optim=sgd", "optim.lr=0.05"],
}
FAST_FAMILIES = ["mlp_ae"]
# A step decay shows only when a decay falls inside the run: 3 epochs, a decay every 2.
OPTIMIZER_SETS = [[], ["optim=sgd", "optim.scheduler=cosine"],
                  ["optim=adamw", "optim.scheduler=step", "optim.scheduler.step_size=2", "trainer.max_epochs=3"]]
# logger.*: where the run logs, not what it learns; tests/test_loggers.py reads each tracker back
SKIPPED_PREFIXES = ("experiment", "debug", "hparams_search", "logger")
# Keys whose effect a one-epoch CPU run on a tiny dataset cannot show in its results, and why
# each still does what it says. Everything else must change the run or be refused.
NOT_VISIBLE = {
    "data.root": "where the files are read from; the same files elsewhere give the same run",
    "data.download": "fetches files only when they are missing; here they are present",
    "trainer.device": "auto is the CPU on this machine",
    "trainer.num_threads": "speed only",
    "trainer.progress": "the progress bar of a terminal; tests have none",
    "trainer.deterministic": "CPU runs are already reproducible; it forbids nondeterministic CUDA kernels",
    "trainer.compile": "the same numbers, compiled",
    "trainer.checkpoint_every_n_steps": "mid-epoch last.pt files, overwritten by the epoch end's",
    "trainer.eval_batch_size": "the same metrics in other batch sizes",
    "trainer.channels_last": "a memory layout; it shows in the conv models' weight strides only",
}


def _changed(key: str, value):
    """Another valid value for `key` (a different effect, not just a different spelling)."""
    special = {"trainer.precision": "bf16", "loss": "bce", "model.output_activation": "identity",
               "optimized_metric": "val/mse", "trainer.max_epochs": 2, "trainer.batch_size": 16,
               "data.max_train_samples": 100, "data.max_test_samples": 20, "data.val_size": 48.0,
               "trainer.train_eval_size": 50, "resume": "/nonexistent/run", "data.name": "fashion_mnist",
               "trainer.log_every_n_steps": 1, "trainer.images_every_n_epochs": 0, "model.latent_activation": "tanh",
               "optim.scheduler.T_max": 3, "trainer.strategy": "ddp", "data.include_classes": [0, 1, 2, 3, 4],
               "data.exclude_classes": [9], "data.path": "/nonexistent/images", "data.channels": 3,
               "data.image_size": 14, "data.test_size": 0.25, "data.images_key": "x", "data.labels_key": "y",
               "data.class_names_key": "names", "model.equilibrium_margin": 0.01}  # a band the losses leave
    if key == "optim.scheduler.interval":
        return "step" if value == "epoch" else "epoch"
    choices = {"model.cell": {"lstm": "gru"}, "model.network": {"mlp": "conv"}, "model.pretrain": {"none": "greedy"},
               "model.downsample": {"stride": "maxpool"}, "model.upsample": {"transpose": "nearest"},
               "model.reconstruction": {"auto": "binary"}}
    if key in choices:
        return choices[key].get(value, next(iter(choices[key])))
    if key in special:
        return special[key] if special[key] != value else None
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value else 0.25
    if isinstance(value, list):
        return [max(1, v // 2) for v in value] if value else [32]
    if isinstance(value, str) and key.endswith(("kind", "activation")):
        return {"none": "l1", "relu": "tanh", "identity": "tanh"}.get(value, "relu")
    return None


def _override(key: str, value) -> str:
    if key == "optim.scheduler.interval":
        return f"{key}={value}"
    return f"{key}={json.dumps(value) if isinstance(value, (list, bool)) else value}"


def _fingerprint(run_dir: Path) -> tuple:
    """What a run did: its metrics (no timings), weights, optimizer state and hyper-parameters,
    the files it wrote and the TensorBoard tags with their counts."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_time_s", "wall_time_s", "step_time_s", "images_per_s"):
        metrics.pop(key, None)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    digest = hashlib.sha256()
    for name, tensor in sorted(state["model"].items()):
        digest.update(name.encode() + tensor.numpy().tobytes() + str(tensor.stride()).encode())
    groups = [{k: v for k, v in g.items() if k != "params"} for o in state["optimizers"].values()
              for g in o["param_groups"]]
    from aerun.loggers.tensorboard import event_dir

    events = EventAccumulator(str(event_dir(run_dir)), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = {tag: len(events.Scalars(tag)) for tag in events.Tags()["scalars"]}
    tags.update({tag: len(events.Images(tag)) for tag in events.Tags()["images"]})
    files = sorted(p.name for p in run_dir.iterdir())
    return json.dumps(metrics, sort_keys=True, default=str), digest.hexdigest(), repr(groups), repr(tags), files


def _run(data_root, tmp_path_factory, overrides: list[str]):
    """(fingerprint, None) of a tiny run, or (None, the one-line refusal)."""
    from aerun.commands.train import train

    base = [f"data.root={data_root}", "data.val_size=32", "data.max_train_samples=96", "data.max_test_samples=32",
            "trainer.max_epochs=1", "trainer.batch_size=32", "trainer.progress=false", "trainer.device=cpu",
            "trainer.train_eval_size=64", "trainer.log_every_n_steps=2"]
    try:
        cfg = compose("train", base + overrides)
        from aerun.commands.train import validate

        validate(cfg)
        run_dir = tmp_path_factory.mktemp("opt")
        train(cfg, run_dir)
    except UserError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - composition errors are refusals too (the CLI's one line)
        if "ConfigCompositionException" in type(exc).__name__ or "Validation" in type(exc).__name__:
            return None, str(exc)
        raise
    return _fingerprint(run_dir), None


def _walk(family: str, optimizer: list[str], data_root, tmp_path_factory) -> list[str]:
    """The keys of `family` that were neither effective nor refused."""
    fixed = [f"model={family}", *FAMILY_OVERRIDES.get(family, []), *optimizer]
    reference, refused = _run(data_root, tmp_path_factory, fixed)
    assert refused is None, refused
    plain = flatten(to_plain(compose("train", fixed)))
    ignored = []
    for key, value in plain.items():
        if key.startswith(SKIPPED_PREFIXES) or key.split(".")[-1].startswith("_") or key in NOT_VISIBLE:
            continue
        if optimizer and (not key.startswith("optim") or any(o.startswith(key + "=") for o in optimizer)):
            continue
        if any(o.startswith(key + "=") for o in FAMILY_OVERRIDES.get(family, [])) and key != "model.layers":
            continue  # set by the small version: changing it back is not the point  # the other keys were walked with the default optimizer
        new = _changed(key, value.value if isinstance(value, Enum) else value)
        if key == "loss":  # null means the family's own default: set the other one
            new = "mse" if json.loads(reference[0])["recon_loss"] == "bce" else "bce"
        assert new is not None, f"no other value known for {key}={value}: teach _changed one"
        fingerprint, refusal = _run(data_root, tmp_path_factory, [*fixed, _override(key, new)])
        if refusal is not None:
            assert "\n" not in refusal.strip() and len(refusal) < 400, refusal
        elif fingerprint == reference:
            ignored.append(f"{key}={new}")
    return ignored


@pytest.mark.slow
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_every_option_of_a_family_changes_the_run_or_is_refused(family, data_root, tmp_path_factory):
    assert _walk(family, [], data_root, tmp_path_factory) == []


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in FAST_FAMILIES])
def test_every_option_of_every_other_family(family, data_root, tmp_path_factory):
    assert _walk(family, [], data_root, tmp_path_factory) == []


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", OPTIMIZER_SETS[1:], ids=["sgd_cosine", "adamw_step"])
def test_every_optimizer_and_scheduler_option(optimizer, data_root, tmp_path_factory):
    assert _walk("mlp_ae", optimizer, data_root, tmp_path_factory) == []


def test_the_not_visible_keys_exist():
    keys = set(flatten(to_plain(compose("train", ["model=cnn_ae"]))))
    assert set(NOT_VISIBLE) <= keys

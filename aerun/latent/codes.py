"""A trained run and the data it was trained on, and the one batched encoder / decoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aerun import runs
from aerun.config import enum_value
from aerun.errors import UserError


def check_common(cfg) -> Path:
    """The run directory (with weights) and the options every command that reads a run has."""
    run = runs.check_run_dir(cfg.run, key="run", need_checkpoint=runs.WEIGHTS)
    if cfg.batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {cfg.batch_size}")
    if enum_value(cfg.device) == "cuda":
        from aerun.devices import resolve_device

        resolve_device("cuda", key="device")
    return run


@dataclass
class ModelInfo:
    name: str  # the model class name, e.g. MLPAutoencoder
    is_variational: bool
    has_prior: bool
    latent_dim: int
    conditional: bool = False


def peek_model(run: Path) -> ModelInfo:
    """The run's model kind and latent size from its config, without loading weights."""
    from hydra.utils import get_class

    model = runs.upgrade_config(runs.read_run_config(run)).get("model") or {}
    try:
        cls = get_class(model["_target_"])
        latent_dim = int(model["latent_dim"])
    except Exception as exc:  # noqa: BLE001 - a config we cannot read is the user's file
        raise UserError(f"run={run}: its {runs.CONFIG_FILE} names no model aerun can build "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return ModelInfo(cls.__name__, bool(getattr(cls, "is_variational", False)), bool(getattr(cls, "has_prior", False)),
                     latent_dim, bool(model.get("conditional", False)))


def run_classes(run: Path) -> list[str]:
    """The class names a run was trained with (recorded in its checkpoint)."""
    from aerun.checkpoint import load_checkpoint

    path = run / (runs.BEST if (run / runs.BEST).is_file() else runs.LAST)
    state = load_checkpoint(path, map_location="cpu")
    return list(state.get("classes") or [str(k) for k in range(int(state.get("num_classes") or 0))])


def class_number(value, classes: list[str], key: str) -> int:
    """A class given by name (MNIST: 0..9; FashionMNIST: Sandal) or number -> its number, or a
    one-line UserError listing the classes."""
    text = str(value)
    if text in classes:
        return classes.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
        return int(text)
    raise UserError(f"{key}={text}: no such class; classes are {', '.join(classes) if classes else '(none)'}")


def load_model(cfg):
    """The run's best.pt rebuilt on cfg.device (a GPU-trained run loads on the CPU too)."""
    from aerun.devices import resolve_device

    from aerun import faults

    device = resolve_device(cfg.device, key="device")
    loaded = runs.load_run(cfg.run, device=device)
    faults.at("latent")
    return loaded, device


def load_data(cfg, loaded: runs.LoadedRun, max_test_samples: int | None = None, filter_test: bool = True):
    """The dataset the run was trained on, split as in training; data.root may move it.
    filter_test=False: the test split of every class, whatever the run's data.include_classes."""
    from aerun.data import dataset_from_config

    d, seed = loaded.config["data"], loaded.config.get("seed", 0)
    root = runs.data_root(loaded.path, d["root"], cfg.data.root)
    where = "data.root" if cfg.data.root is not None else "the run's data.root"
    if not Path(str(root)).expanduser().exists():  # a folder, or CIFAR-10's release archive itself
        raise UserError(f"cannot load the {d['name']} data this run was trained on ({where}={root}): no such "
                        f"directory; pass data.root=<folder that holds it>")
    try:
        dataset = dataset_from_config(d, seed, root=root, max_test_samples=max_test_samples, download=False,
                                      filter_test=filter_test)
    except UserError as exc:
        problem = str(exc).split("; ")[0]  # drop the loader's hint: these commands have no data.download
        raise UserError(f"cannot load the {d['name']} data this run was trained on ({where}={root}): {problem}; "
                        f"pass data.root=<folder that holds it>") from None
    if tuple(dataset.image_shape) != tuple(loaded.input_shape):
        raise UserError(f"data.root={root}: its {d['name']} images are {tuple(dataset.image_shape)}, "
                        f"but the run's model takes {tuple(loaded.input_shape)}")
    return dataset


def get_split(dataset, name):
    name = enum_value(name)
    split = getattr(dataset, name)
    if len(split) == 0:
        raise UserError(f"split={name}: the run's {name} split is empty (it was trained with data.val_size=0)")
    return split


def encode_batches(model, images_uint8, batch_size: int, device=None, labels=None) -> dict:
    """uint8 [N, C, H, W] -> the model's `embed` of every image, float32 CPU tensors:
    {"codes": [N, D]} (+ "mu", "logvar" for VAEs, whose codes are the posterior means).
    A conditional model reads each image's label (`labels` [N])."""
    import torch

    from aerun.engine.step import to_float

    device = device if device is not None else next(model.parameters()).device
    parts: dict[str, list] = {"codes": [torch.zeros(0, model.latent_dim)]}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images_uint8), batch_size):
            x = to_float(images_uint8[start:start + batch_size].to(device))
            y = labels[start:start + batch_size].to(device) if labels is not None and model.uses_labels else None
            for key, value in model.embed(x, y).items():
                parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values) for key, values in parts.items()}


def encode_images(model, images_uint8, batch_size: int, device=None, labels=None) -> dict[str, np.ndarray]:
    """`encode_batches` as numpy arrays (what the commands save)."""
    return {key: value.numpy()
            for key, value in encode_batches(model, images_uint8, batch_size, device, labels).items()}


def decode_codes(model, codes, batch_size: int, device, labels=None):
    """[N, D] codes -> float tensor [N, C, H, W] of images in [0, 1] on the CPU (a conditional
    model decodes each code with its label, `labels` [N])."""
    import torch

    z = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long) if labels is not None and model.uses_labels else None
    with torch.inference_mode():
        images = [model.decode(z[start:start + batch_size].to(device),
                               y[start:start + batch_size].to(device) if y is not None else None).float().cpu()
                  for start in range(0, len(z), batch_size)]
    return torch.cat(images).clamp_(0, 1)


def subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` of `n` items, a seeded choice when there are more."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def save_npz(path: Path, **arrays) -> None:
    from aerun.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy(path: Path, array) -> None:
    from aerun.io import atomic_path

    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def report(lines: list[tuple[Path, str]]) -> None:
    """What a command wrote, one file per line (the command's requested output)."""
    for path, what in lines:
        print(f"wrote {path}  ({what})")

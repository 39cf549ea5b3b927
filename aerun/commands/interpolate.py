"""`aerun interpolate run=<dir>`: decode along the path between the codes of two images.

mode=pair (default): two images of `split` picked by index (from_index, to_index) or by
class (from_class=2 to_class=9: the first image of each), `steps` codes from one to the
other on a line (method=linear) or a great circle (method=slerp), decoded into one row
-> interpolation.png, and interpolation.npz (codes [steps, D], images, the two indices).

mode=manifold (2-d latents only): a grid x grid lattice of codes decoded into one image
-> manifold.png. VAEs: the lattice spans N(0, 1) quantiles q .. 1-q on each axis (the
prior's mass); other models: the min..max range of the split's codes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from aerun.config import enum_value
from aerun.errors import UserError
from aerun.figures import save_image_grid
from aerun.latent import codes as latent
from aerun.latent.samplers import manifold_codes, prior_quantiles

log = logging.getLogger("aerun.interpolate")


def validate(cfg: DictConfig) -> None:
    run = latent.check_common(cfg)
    for end in ("from", "to"):
        index, label = cfg[f"{end}_index"], cfg[f"{end}_class"]
        if index is not None and label is not None:
            raise UserError(f"{end}_index and {end}_class: give one of them, not both")
        if index is not None and index < 0:
            raise UserError(f"{end}_index: must be >= 0, got {index}")
    if cfg.steps < 2:
        raise UserError(f"steps: must be >= 2 (the two ends), got {cfg.steps}")
    if cfg.interpolate.grid < 2:
        raise UserError(f"interpolate.grid: must be >= 2, got {cfg.interpolate.grid}")
    if not 0 < cfg.interpolate.quantile < 0.5:
        raise UserError(f"interpolate.quantile: must be in (0, 0.5), got {cfg.interpolate.quantile}")
    if enum_value(cfg.mode) == "manifold":
        info = latent.peek_model(run)
        if info.conditional:
            raise UserError("mode=manifold: this run's model is conditional, and a manifold of one class at a "
                            "time is not drawn; use mode=pair with two images of one class, or aerun generate")
        if info.latent_dim != 2:
            raise UserError(f"mode=manifold: needs a 2-d latent, but this run's latent is {info.latent_dim}-d; "
                            f"use mode=pair, or train with model.latent_dim=2")


def run(cfg: DictConfig, job):
    interpolate(cfg, job.out_dir)


def interpolate(cfg: DictConfig, out_dir: str | Path) -> dict:
    started = time.time()
    validate(cfg)
    out_dir = Path(out_dir)
    loaded, device = latent.load_model(cfg)
    if enum_value(cfg.mode) == "manifold":
        result = _manifold(cfg, loaded, device, out_dir)
    else:
        result = _pair(cfg, loaded, device, out_dir)
    log.info("interpolate (%s) took %.1f s", enum_value(cfg.mode), time.time() - started)
    return result


def pick_index(split, classes: list[str], split_name: str, end: str, index, label, default: int,
               avoid: int | None = None) -> int:
    """The image index of one end: by index, by class (its first image other than `avoid`, so
    from_class=3 to_class=3 goes between two different 3s), or the default."""
    n = len(split)
    if label is not None and not classes:
        raise UserError(f"{end}_class={label}: the run's data has no labels, so there are no classes; pick images "
                        f"with {end}_index=<number>")
    if label is not None:
        label = str(label)
        if label in classes:
            number = classes.index(label)
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(classes):
            number = int(label)  # a class number, e.g. 5 for FashionMNIST's Sandal
        else:
            raise UserError(f"{end}_class={label}: no such class; classes are {', '.join(classes)}")
        found = (split.labels == number).nonzero()[:, 0].tolist()
        if not found:
            raise UserError(f"{end}_class={label}: the {split_name} split has no image of class {classes[number]}")
        others = [i for i in found if i != avoid]
        return others[0] if others else found[0]
    index = default if index is None else int(index)
    if not 0 <= index < n:
        raise UserError(f"{end}_index={index}: out of range; the {split_name} split has {n} images "
                        f"(indices 0..{n - 1})")
    return index


def _pair(cfg, loaded, device, out_dir: Path) -> dict:
    import torch

    model, method, split_name = loaded.model, enum_value(cfg.method), enum_value(cfg.split)
    dataset = latent.load_data(cfg, loaded)
    split = latent.get_split(dataset, split_name)
    i0 = pick_index(split, dataset.classes, split_name, "from", cfg.from_index, cfg.from_class, 0)
    i1 = pick_index(split, dataset.classes, split_name, "to", cfg.to_index, cfg.to_class, min(1, len(split) - 1),
                    avoid=i0)
    end_labels = split.labels[[i0, i1]]
    path_labels = None
    if model.uses_labels:  # a conditional model: two styles of one class, decoded as that class
        if end_labels[0] != end_labels[1]:
            raise UserError(f"this run's model is conditional: it interpolates between two styles of one class; "
                            f"pick two images of the same class (from_class=7 to_class=7), not classes "
                            f"{dataset.classes[int(end_labels[0])]} and {dataset.classes[int(end_labels[1])]}")
        path_labels = np.full(cfg.steps, int(end_labels[0]))
    ends = torch.as_tensor(latent.encode_images(model, split.images[[i0, i1]], 2, device, end_labels)["codes"])
    codes = model.path_between(ends[0].to(device), ends[1].to(device), cfg.steps, method).cpu()  # [steps, D]
    images = latent.decode_codes(model, codes, cfg.batch_size, device, path_labels)  # [steps, C, H, W]
    # the two real images above the decoded ends, so a reconstruction that is off shows
    real = split.images[[i0, i1]].float().cpu() / 255.0  # [2, C, H, W]
    top = torch.ones_like(images)
    top[0], top[-1] = real[0], real[1]
    save_image_grid(torch.cat([top, images]), out_dir / "interpolation.png", nrow=cfg.steps,
                    row_labels=["input images", "decoded path"])
    labels = split.labels[[i0, i1]].tolist()
    latent.save_npz(out_dir / "interpolation.npz", codes=codes.numpy(), images=images.numpy(),
                    indices=np.array([i0, i1]), labels=np.array(labels))
    names = [f" (class {dataset.classes[label]})" if 0 <= label < len(dataset.classes) else "" for label in labels]
    latent.report([(out_dir / "interpolation.png", f"{cfg.steps} steps, {method}, {split_name} image {i0}"
                    f"{names[0]} -> image {i1}{names[1]}"),
                   (out_dir / "interpolation.npz", "codes, images, indices, labels")])
    return {"png": out_dir / "interpolation.png", "codes": codes.numpy(), "ends": ends.numpy(),
            "indices": (i0, i1)}


def _manifold(cfg, loaded, device, out_dir: Path) -> dict:
    model, grid = loaded.model, cfg.interpolate.grid
    if model.has_prior:
        axis = prior_quantiles(grid, cfg.interpolate.quantile)
        x_values = y_values = axis
        span = f"N(0, 1) quantiles {cfg.interpolate.quantile:g}..{1 - cfg.interpolate.quantile:g}"
    else:
        split_name = enum_value(cfg.split)
        split = latent.get_split(latent.load_data(cfg, loaded), split_name)
        codes = latent.encode_images(model, split.images, cfg.batch_size, device)["codes"]
        low, high = codes.min(0), codes.max(0)
        x_values, y_values = np.linspace(low[0], high[0], grid), np.linspace(low[1], high[1], grid)
        span = (f"the {split_name} codes' range z1 {low[0]:.3g}..{high[0]:.3g}, "
                f"z2 {low[1]:.3g}..{high[1]:.3g}")
    codes = manifold_codes(x_values, y_values)  # [grid * grid, 2]
    images = latent.decode_codes(model, codes, cfg.batch_size, device)
    save_image_grid(images, out_dir / "manifold.png", nrow=grid)
    latent.report([(out_dir / "manifold.png", f"{grid} x {grid} decoded codes over {span}; "
                    f"z1 left to right, z2 bottom to top")])
    return {"png": out_dir / "manifold.png", "codes": codes}

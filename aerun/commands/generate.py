"""`aerun generate run=<dir> n=64 sampler=prior|normal|uniform|gmm seed=0 [class=7]`: new images
through the run's decoder.

`prior` draws codes from the prior the model was trained with (N(0, I) for a VAE), which only
such a model was trained to decode. The others are densities fitted to the run's training
codes -- the courses' experiment of which one gives a plain autoencoder believable digits:
`uniform` within each dimension's min/max, `normal` a full-covariance Gaussian, `gmm` a
Gaussian mixture (generate.components). `auto` is prior where there is one and gmm otherwise.
A conditional run decodes each code with a class: `class=7` makes n sevens; without `class`,
every class gets a row and each column shares one code (one style across the classes).
Writes samples.png (a grid) and samples.npy (float32 [n, C, H, W] in [0, 1]; labels.npy for
a conditional run) into this command's own run directory.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from aerun.config import enum_value
from aerun.errors import UserError
from aerun.figures import save_image_grid
from aerun.latent import codes as latent
from aerun.latent.samplers import FITTED_SAMPLERS, fit_sampler, grid_nrow

log = logging.getLogger("aerun.generate")


def validate(cfg: DictConfig) -> None:
    from aerun.config.validate import at_least

    run = latent.check_common(cfg)
    at_least(cfg, "", 1, "n")
    at_least(cfg.generate, "generate.", 1, "components", "grid_max")
    at_least(cfg.generate, "generate.", 1, "nrow", none_ok=True)
    info = latent.peek_model(run)
    if enum_value(cfg.sampler) == "prior" and not info.has_prior:
        raise UserError(f"sampler=prior: this run's {info.name} has no prior (it is not a VAE), so nothing trained "
                        f"its codes to follow one; use sampler={', '.join(FITTED_SAMPLERS[:-1])} or "
                        f"{FITTED_SAMPLERS[-1]} (densities fitted to its training codes)")
    if cfg.generate.gibbs_steps != 1000 and info.name not in ("RBM", "DBN"):
        raise UserError(f"generate.gibbs_steps={cfg.generate.gibbs_steps}: has no effect for this run's {info.name} "
                        f"(Gibbs chains sample RBMs and DBNs)")
    at_least(cfg.generate, "generate.", 1, "gibbs_steps")
    if cfg.get("class") is not None:
        if not info.conditional:
            raise UserError(f"class={cfg['class']}: this run's {info.name} is not conditional, so it cannot be told "
                            f"which class to draw; train with model.conditional=true")
        latent.class_number(cfg["class"], latent.run_classes(run), "class")


def run(cfg: DictConfig, job):
    """Returns the samples' Frechet distance (what a sweep over samplers minimises), or None."""
    return generate(cfg, job.out_dir).get("frechet_distance")


def generate(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Draw codes, decode them, write samples.png and samples.npy; returns paths and sampler."""
    started = time.time()
    validate(cfg)
    out_dir = Path(out_dir)
    loaded, device = latent.load_model(cfg)
    model = loaded.model
    sampler = enum_value(cfg.sampler)
    if sampler == "auto":
        sampler = "prior" if model.has_prior else "gmm"
    labels, rows = _labels(cfg, loaded)
    n_codes = cfg.n if rows is None else math.ceil(cfg.n / rows)  # one code per column of a class grid
    codes, source = _draw(cfg, loaded, device, sampler, n_codes)
    if rows is not None:  # every class decodes the same codes: [K * m] class-major
        codes = np.tile(codes, (rows, 1))
    images = latent.decode_codes(model, codes, cfg.batch_size, device, labels)  # [n, C, H, W] in [0, 1]
    latent.save_npy(out_dir / "samples.npy", images.numpy().astype(np.float32))
    written = []
    if labels is not None:
        latent.save_npy(out_dir / "labels.npy", np.asarray(labels))
        written.append((out_dir / "labels.npy", "the class of every sample"))
    shown = min(len(images), cfg.generate.grid_max)  # n = 100,000 for a metric would make a 90-megapixel grid
    nrow = cfg.generate.nrow or (n_codes if rows is not None else grid_nrow(shown))
    row_labels = [loaded.checkpoint.get("classes", [])[k] if loaded.checkpoint.get("classes") else str(k)
                  for k in range(rows)][: math.ceil(shown / nrow)] if rows is not None else None
    save_image_grid(images[:shown], out_dir / "samples.png", nrow=nrow, row_labels=row_labels)
    what = f"{len(images)} samples" if shown == len(images) else \
        f"the first {shown} of {len(images)} samples (generate.grid_max)"
    layout = "one row per class, one code per column" if rows is not None else f"{nrow} per row"
    quality = _write_quality(cfg, loaded, images, device, out_dir, sampler) if cfg.generate.quality else None
    if quality is not None:
        written.append((out_dir / "quality.json", f"Frechet distance {quality['frechet_distance']:.2f}, precision "
                        f"{quality['precision']:.3f}, recall {quality['recall']:.3f}, class entropy "
                        f"{quality['class_entropy']:.3f} (judge test accuracy {quality['judge']['test_accuracy']:.4f})"))
    latent.report([(out_dir / "samples.png", f"{what}, {layout}; z from {source}"),
                   (out_dir / "samples.npy", f"float32 {list(images.shape)} in [0, 1]"), *written])
    log.info("generated %d images with sampler=%s in %.1f s", len(images), sampler, time.time() - started)
    return {"samples": out_dir / "samples.npy", "grid": out_dir / "samples.png", "sampler": sampler,
            "codes": codes, "labels": labels, "quality": quality,
            "frechet_distance": quality["frechet_distance"] if quality else None}


def _write_quality(cfg, loaded, images, device, out_dir: Path, sampler: str) -> dict | None:
    """quality.json, and metrics.json with the Frechet distance as the objective (a sweep over
    samplers ranks them by it); skipped with one line for data without labels."""
    from aerun.io import write_json
    from aerun.latent.judging import sample_quality_report

    try:
        quality = sample_quality_report(cfg, loaded, images, device)
    except UserError as exc:
        log.info("no quality.json: %s", exc)
        return None
    write_json(out_dir / "quality.json", quality)
    write_json(out_dir / "metrics.json", {"objective": {"name": "quality/frechet_distance",
                                                        "value": quality["frechet_distance"]},
                                          "quality": {k: v for k, v in quality.items() if not isinstance(v, dict)},
                                          "sampler": sampler, "n": len(images)})
    return quality


def _labels(cfg, loaded) -> tuple[np.ndarray | None, int | None]:
    """(the label of every sample, the number of class rows) for a conditional run; (None, None) else."""
    if not loaded.model.uses_labels:
        return None, None
    if cfg.get("class") is not None:
        number = latent.class_number(cfg["class"], loaded.checkpoint.get("classes") or [], "class")
        return np.full(cfg.n, number, dtype=np.int64), None
    rows = loaded.model.num_classes
    per_class = math.ceil(cfg.n / rows)
    return np.repeat(np.arange(rows), per_class), rows


def _draw(cfg, loaded, device, sampler: str, n: int) -> tuple[np.ndarray, str]:
    """`n` codes from the model's prior or from a density fitted to its training codes."""
    model = loaded.model
    if sampler == "prior":
        import torch

        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        if hasattr(model, "gibbs_samples"):  # RBMs: the hidden state at the end of Gibbs chains
            codes = model.sample_codes(n, generator, steps=cfg.generate.gibbs_steps)
            return codes.float().cpu().numpy(), f"{cfg.generate.gibbs_steps} Gibbs steps from random visible units"
        return model.sample_codes(n, generator).float().cpu().numpy(), model.prior_name  # no data needed
    dataset = latent.load_data(cfg, loaded)
    train = dataset.train
    train_codes = latent.encode_images(model, train.images, cfg.batch_size, device, train.labels)["codes"]
    sample = fit_sampler(sampler, train_codes, cfg.generate.components, cfg.seed)
    source = f"{sampler} fitted to {len(train_codes)} training codes"
    if sampler == "gmm":
        source = source.replace("gmm", f"{cfg.generate.components}-component gmm")
    return sample(n, np.random.default_rng(cfg.seed)), source

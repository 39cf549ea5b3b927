"""`aerun generate run=<dir> n=64 sampler=prior|normal|uniform|gmm seed=0`: new images
through the run's decoder.

`prior` draws z ~ N(0, I), which only a VAE was trained to decode. The others are
densities fitted to the run's training codes -- the courses' experiment of which one
gives a plain autoencoder believable digits: `uniform` within each dimension's min/max,
`normal` a full-covariance Gaussian, `gmm` a Gaussian mixture (generate.components).
`auto` is prior for VAEs and gmm otherwise. Writes samples.png (a grid) and
samples.npy (float32 [n, C, H, W] in [0, 1]) into this command's own run directory.
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
from aerun.latent.samplers import FITTED_SAMPLERS, fit_sampler, grid_nrow

log = logging.getLogger("aerun.generate")


def validate(cfg: DictConfig) -> None:
    run = latent.check_common(cfg)
    if cfg.n < 1:
        raise UserError(f"n: must be >= 1, got {cfg.n}")
    if cfg.generate.components < 1:
        raise UserError(f"generate.components: must be >= 1, got {cfg.generate.components}")
    if cfg.generate.nrow is not None and cfg.generate.nrow < 1:
        raise UserError(f"generate.nrow: must be >= 1 or null, got {cfg.generate.nrow}")
    if cfg.generate.grid_max < 1:
        raise UserError(f"generate.grid_max: must be >= 1, got {cfg.generate.grid_max}")
    if enum_value(cfg.sampler) == "prior":
        info = latent.peek_model(run)
        if not info.has_prior:
            raise UserError(f"sampler=prior: this run's {info.name} is not a VAE, so nothing trained its codes "
                            f"to follow N(0, I); use sampler={', '.join(FITTED_SAMPLERS[:-1])} or "
                            f"{FITTED_SAMPLERS[-1]} (densities fitted to its training codes)")


def run(cfg: DictConfig, job):
    generate(cfg, job.out_dir)


def generate(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Draw cfg.n codes, decode them, write samples.png and samples.npy; returns paths and sampler."""
    started = time.time()
    validate(cfg)
    out_dir = Path(out_dir)
    loaded, device = latent.load_model(cfg)
    model = loaded.model
    sampler = enum_value(cfg.sampler)
    if sampler == "auto":
        sampler = "prior" if model.has_prior else "gmm"
    rng = np.random.default_rng(cfg.seed)
    if sampler == "prior":
        import torch

        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        codes = model.sample_codes(cfg.n, generator).float().cpu().numpy()  # no data needed
        source = model.prior_name
    else:
        dataset = latent.load_data(cfg, loaded)
        train_codes = latent.encode_images(model, dataset.train.images, cfg.batch_size, device)["codes"]
        sample = fit_sampler(sampler, train_codes, cfg.generate.components, cfg.seed)
        codes = sample(cfg.n, rng)
        source = f"{sampler} fitted to {len(train_codes)} training codes"
        if sampler == "gmm":
            source = source.replace("gmm", f"{cfg.generate.components}-component gmm")
    images = latent.decode_codes(model, codes, cfg.batch_size, device)  # [n, C, H, W] in [0, 1]

    latent.save_npy(out_dir / "samples.npy", images.numpy().astype(np.float32))
    # n = 100,000 for a metric would make a 90-megapixel grid: the PNG shows the first grid_max
    shown = min(cfg.n, cfg.generate.grid_max)
    nrow = cfg.generate.nrow or grid_nrow(shown)
    save_image_grid(images[:shown], out_dir / "samples.png", nrow=nrow)
    what = f"{cfg.n} samples" if shown == cfg.n else f"the first {shown} of {cfg.n} samples (generate.grid_max)"
    latent.report([(out_dir / "samples.png", f"{what}, {nrow} per row; z from {source}"),
                   (out_dir / "samples.npy", f"float32 {list(images.shape)} in [0, 1]")])
    log.info("generated %d images with sampler=%s in %.1f s", cfg.n, sampler, time.time() - started)
    return {"samples": out_dir / "samples.npy", "grid": out_dir / "samples.png", "sampler": sampler,
            "codes": codes}

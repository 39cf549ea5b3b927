"""`aerun compress run=<run dir> compress.bits=[2,4,6,8]`: an autoencoder as a lossy codec.

The run's codes of the test images are quantised to b bits per dimension over the range of
the training codes, entropy-coded (aerun.analysis.compression: the bytes counted are those of
the actual encoded stream, the best of packed / zlib / lzma, beside the symbols' empirical
entropy), decoded, and the rate-distortion curve (bits per pixel against PSNR) is written beside
PCA at the same bits and JPEG (Pillow) at the same bits per pixel: compression.json,
compression.md and rate_distortion.png in this command's own run directory.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from aerun.errors import UserError

log = logging.getLogger("aerun.compress")
BASELINES = ("pca", "jpeg")


def validate(cfg: DictConfig) -> None:
    from aerun.analysis.compression import check_bits
    from aerun.config.validate import at_least
    from aerun.latent.codes import check_common, peek_model

    run = check_common(cfg)
    if not cfg.compress.bits:
        raise UserError("compress.bits: give at least one number of bits per code dimension, e.g. [2,4,6,8]")
    for bits in cfg.compress.bits:
        try:
            check_bits(bits)
        except UserError as error:  # named as the user wrote it
            raise UserError(f"compress.{error}") from None
    unknown = [b for b in cfg.compress.baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"compress.baselines: unknown {', '.join(map(str, unknown))}; choose from {', '.join(BASELINES)}")
    at_least(cfg.compress, "compress.", 1, "max_test_samples", none_ok=True)
    if peek_model(run).conditional:
        raise UserError("compress: this run's model is conditional: decoding needs each image's class, which a "
                        "codec would have to send too; compress an unconditional run")


def run(cfg: DictConfig, job):
    """Returns the PSNR of the autoencoder at its largest bits setting."""
    from aerun.io import write_json, write_text

    validate(cfg)
    rows, title = rate_distortion_rows(cfg)
    out = job.out_dir
    write_json(out / "compression.json", {"run": str(cfg.run), "rows": rows})
    table = format_table(rows, title)
    write_text(out / "compression.md", table + "\n")
    from aerun.analysis.compression import rd_figure

    rd_figure(out / "rate_distortion.png", rows, title)
    print(table)
    print(f"\nwrote {out / 'compression.json'}, compression.md, rate_distortion.png")
    return [r for r in rows if r["method"] == "autoencoder"][-1]["psnr"]


def rate_distortion_rows(cfg) -> tuple[list[dict], str]:
    from aerun.analysis.compression import jpeg_matched, model_codec, pca_rate_distortion, rate_distortion
    from aerun.engine.step import to_float
    from aerun.latent.codes import encode_images, load_data, load_model

    loaded, device = load_model(cfg)
    model = loaded.model
    dataset = load_data(cfg, loaded, max_test_samples=cfg.compress.max_test_samples)
    test = to_float(dataset.test.images).numpy()
    train_codes = encode_images(model, dataset.train.images, cfg.batch_size, device)["codes"]
    encode, decode = model_codec(model, cfg.batch_size)
    bits = list(cfg.compress.bits)
    rows = rate_distortion(encode, decode, test, bits, train_codes)
    title = f"{type(model).__name__} (latent {model.latent_dim}) on {dataset.name} test ({len(test)} images)"
    if "pca" in cfg.compress.baselines:
        # PCA has at most min(pixels, training images) components: a wider code is compared with all of them
        k = min(model.latent_dim, math.prod(dataset.image_shape), len(dataset.train.images))
        rows += pca_rate_distortion(dataset.train.images, test, k, bits)
        if k < model.latent_dim:
            title += f"; PCA capped at {k} components, all it has"
    if "jpeg" in cfg.compress.baselines:
        rows += jpeg_matched(test, [r["bpp"] for r in rows if r["method"] == "autoencoder"])
    return rows, title


def format_table(rows: list[dict], title: str) -> str:
    lines = [title, "", "| method | bits / dim | bits per pixel | ideal (entropy) bpp | PSNR (dB) | MSE |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        bits = r.get("bits", f"q={r.get('quality')}")
        if "target_bpp" in r:  # JPEG matched to an AE row's rate; on small images even q=1 is above it
            missed = "" if r["target_reached"] else ", not reached: the closest quality"
            bits += f" (for {r['target_bpp']:.3f} bpp{missed})"
        ideal = f"{r['bpp_entropy']:.4f}" if "bpp_entropy" in r else "-"
        lines.append(f"| {r['method']} | {bits} | {r['bpp']:.4f} | {ideal} | {r['psnr']:.2f} | {r['mse']:.5f} |")
    return "\n".join(lines)

"""Input corruption for denoising autoencoders: where the noise is drawn, and from which stream."""

from __future__ import annotations

import logging
import math

import torch

from aerun.errors import UserError

log = logging.getLogger("aerun.data")

NOISE_KINDS = ("none", "gaussian", "salt_pepper", "masking", "watermark")
SPLITS = ("train", "test")  # a watermark's word lists: the test split's words are never trained on


def noise_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The denoising-noise stream of one training epoch (fresh noise each epoch, reproducible)."""
    return torch.Generator(device=device).manual_seed(seed * 7_919 + epoch + 1)


def restore_noise_state(generator: torch.Generator, saved: torch.Tensor) -> bool:
    """Continue a mid-epoch checkpoint's noise stream. A state saved on another kind of device
    (a CUDA generator's is 16 bytes, a CPU one's 5,056) cannot be loaded: the epoch's remaining
    noise then comes from the fresh per-epoch stream, and the resume is not bit-exact."""
    if saved.numel() != generator.get_state().numel():
        log.warning("resume: the denoising noise's generator was saved on another kind of device; the rest of "
                    "this epoch draws fresh noise (the run is no longer bit-exact with an uninterrupted one)")
        return False
    generator.set_state(saved)
    return True


def apply_noise(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None, split: str = "train"
) -> torch.Tensor:
    """Corrupt a float batch `x` in [0, 1] [B, C, H, W] for denoising; the clean x is the target.

    "gaussian": clamp(x + level * N(0, 1), 0, 1). "salt_pepper": each pixel, with probability
    `level`, becomes 0 or 1 (half each) in all channels. "masking": each pixel, with probability
    `level`, becomes 0 in all channels. "watermark": a semi-transparent word stamped on each
    image (`aerun.data.watermark`; `level` is the opacity, in (0, 1]), from `split`'s word list
    (train and validation: "train"; test: "test", words never trained on). "none": x itself.
    Draws come from `generator`, which must live on x's device (None: torch's default generator
    for that device).
    """
    if kind not in NOISE_KINDS:
        raise UserError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    if kind == "none":
        return x
    if not x.is_floating_point():
        raise TypeError(f"apply_noise needs a float tensor in [0, 1], got {x.dtype}")
    if not math.isfinite(level) or level < 0 or (kind != "gaussian" and level > 1):
        limit = "a finite sigma >= 0" if kind == "gaussian" else "a probability in [0, 1]"
        raise UserError(f"noise level {level} is invalid for {kind!r} noise: it must be {limit}")
    if kind == "watermark":
        from aerun.data.watermark import apply_watermark

        return apply_watermark(x, generator, split, level)[0]
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp_(0, 1)
    # One uniform per pixel, shared by the channels (a dead pixel is dead in every channel).
    # Drawn in float32 so a half-precision x does not bias the probabilities.
    u = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device)  # [B, 1, H, W]
    if kind == "masking":
        return x * (u >= level).to(x.dtype)
    # salt_pepper: u < level/2 -> salt (1), level/2 <= u < level -> pepper (0), else keep.
    value = (u < level / 2).to(x.dtype)
    return torch.where(u < level, value, x)

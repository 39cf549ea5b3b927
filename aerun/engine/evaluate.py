"""`evaluate`: a model's metrics over one split, in batches, with its own random streams."""

from __future__ import annotations

from functools import partial

import torch

from aerun.data.noise import apply_noise
from aerun.engine.step import autocast, to_float
from aerun.models.base import Batch, psnr


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    batch_size: int = 1000,
    recon_loss: str = "mse",
    precision: str = "32",
    noise_kind: str = "none",
    noise_level: float = 0.0,
    seed: int = 0,
    channels_last: bool = False,
) -> dict[str, float | list[float]]:
    """The means over `images` of what `model.eval_metrics` sums (MSE and BCE per pixel, PSNR,
    the objective per image, and whatever the family adds: an ELBO, per-dimension KL, code sparsity...), and for
    denoising the noisy input's PSNR. Uses its own RNG so training's stream is untouched."""
    model.eval()
    device = images.device
    if labels is None:
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed + 12_345)
    amp = partial(autocast, device, precision)
    sums: dict[str, torch.Tensor] = {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 54_321)
        for start in range(0, images.shape[0], batch_size):
            target = to_float(images[start:start + batch_size], channels_last)
            inputs = apply_noise(target, noise_kind, noise_level, generator) if noise_kind != "none" else target
            batch = Batch(inputs, target, labels[start:start + batch_size])
            found = model.eval_metrics(batch, recon_loss, amp)
            if noise_kind != "none":
                found["psnr_noisy"] = psnr((inputs - target).square().flatten(1).mean(1)).sum()
            for name, value in found.items():
                sums[name] = sums[name] + value if name in sums else value
    result = _means(sums, images.shape[0])
    if noise_kind != "none":
        result["psnr_gain"] = result["psnr"] - result["psnr_noisy"]
    return result


def _means(sums: dict[str, torch.Tensor], n: int) -> dict[str, float | list[float]]:
    """Sums -> per-image means on the host, in one transfer; vector sums stay lists."""
    names = list(sums)
    if not names:
        return {}
    values = torch.cat([sums[k].reshape(-1).float() for k in names]).div(n).tolist()
    result, i = {}, 0
    for name in names:
        size = sums[name].numel()
        result[name] = values[i] if sums[name].dim() == 0 else values[i:i + size]
        i += size
    return result

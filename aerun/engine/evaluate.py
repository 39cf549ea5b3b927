"""`evaluate`: a model's metrics over one split, in batches, with its own random streams."""

from __future__ import annotations

from functools import partial

import torch

from aerun.data.noise import apply_noise
from aerun.data.watermark import apply_watermark, psnr_from_sums, psnr_region_sums
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
    noise_split: str = "test",
    region_psnr: bool = False,
) -> dict[str, float | list[float]]:
    """The means over `images` of what `model.eval_metrics` sums (MSE and BCE per pixel, PSNR,
    the objective per image, and whatever the family adds: an ELBO, per-dimension KL, code sparsity...), and for
    denoising the noisy input's PSNR. Uses its own RNG so training's stream is untouched.

    `noise_split`: which word list watermark noise stamps ("train" for validation, "test" for
    the test split). `region_psnr` (watermark noise): also the PSNR inside the stamps and
    outside them, of the noisy input and of the output (one more forward pass per batch)."""
    model.eval()
    device = images.device
    if labels is None:
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed + 12_345)
    amp = partial(autocast, device, precision)
    sums: dict[str, torch.Tensor] = {}
    regions: dict[str, float] = {}  # watermark PSNR sums (host numbers)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + 54_321)
        for start in range(0, images.shape[0], batch_size):
            target = to_float(images[start:start + batch_size], channels_last)
            batch_labels = labels[start:start + batch_size]
            if region_psnr and noise_kind == "watermark":
                inputs, mask = apply_watermark(target, generator, noise_split, noise_level)
                with amp():
                    output = model.reconstruct(inputs, batch_labels).float()
                _add(regions, {f"{k}_noisy": v for k, v in psnr_region_sums(inputs, target, mask).items()})
                _add(regions, psnr_region_sums(output, target, mask))
            elif noise_kind != "none":
                inputs = apply_noise(target, noise_kind, noise_level, generator, noise_split)
            else:
                inputs = target
            found = model.eval_metrics(Batch(inputs, target, batch_labels), recon_loss, amp)
            if noise_kind != "none":
                found["psnr_noisy"] = psnr((inputs - target).square().flatten(1).mean(1)).sum()
            _add(sums, found)
    result = _means(sums, images.shape[0])
    if noise_kind != "none":
        result["psnr_gain"] = result["psnr"] - result["psnr_noisy"]
    if regions:
        result.update(_region_means(regions))
    return result


def _add(sums: dict, found: dict) -> None:
    for name, value in found.items():
        sums[name] = sums[name] + value if name in sums else value


def _region_means(regions: dict) -> dict:
    """PSNR inside the stamps, outside them and over the image, of the noisy input and the output."""
    noisy = psnr_from_sums({k[:-len("_noisy")]: v for k, v in regions.items() if k.endswith("_noisy")})
    output = psnr_from_sums({k: v for k, v in regions.items() if not k.endswith("_noisy")})
    return {**{f"{k}_noisy": noisy[k] for k in ("psnr_region", "psnr_outside", "psnr_image")},
            **{k: output[k] for k in ("psnr_region", "psnr_outside", "psnr_image")},
            "psnr_region_gain": None if output["psnr_region"] is None else output["psnr_region"] - noisy["psnr_region"],
            "stamped_fraction": output["stamped_fraction"]}


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

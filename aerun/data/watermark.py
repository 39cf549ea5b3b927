"""Watermark noise for denoising: a semi-transparent text stamp on each image, to be removed.

The words come from two disjoint lists, so a model trained on the "train" stamps is tested
on text it never saw ("test"). Rendering text with PIL per image would cost milliseconds an
image, so each split's words are rendered once (PIL's built-in font, sized to the image) into
a bank of alpha masks; a batch then picks a word per image and places it with one affine
grid_sample (scale, angle, offset), all in torch on x's device. The random numbers come from
the caller's seeded generator (which may live on a GPU): the same seed gives the same stamps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aerun.errors import UserError

TRAIN_WORDS = ("COPY", "DRAFT", "PROOF", "STOCK", "DEMO", "MARK", "PHOTO", "AD", "NEW", "SALE", "FREE",
               "VOID", "TM", "2019", "2021", "(C)", "ABC", "XYZ", "OK", "WEB", "NET", "PRO", "BETA", "ALPHA")
TEST_WORDS = ("SECRET", "TEST", "FAKE", "LOGO", "2024", "IMG", "CC", "HOLD", "KEEP", "ZOOM", "RAW", "DUPE")
SPLITS = {"train": TRAIN_WORDS, "test": TEST_WORDS}
MAX_ANGLE_DEGREES = 30.0
MIN_ALPHA = 1 / 255  # weaker coverage than one grey level is dropped: the mask marks visible changes
_BANKS: dict = {}  # (split, font_px, device) -> (masks [K, 1, Hb, Wb], text widths [K])


def font_px(height: int, width: int) -> int:
    """The font size of the bank for an image: text about 40% of the image's smaller side."""
    return max(6, round(0.4 * min(height, width)))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # FreeType: a scalable font at `size` pixels
    except (TypeError, ImportError, OSError):  # an old Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_bank(words, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Alpha masks of `words`, each centred on one shared canvas: ([K, 1, Hb, Wb] in [0, 1],
    text widths [K] in pixels)."""
    from PIL import Image, ImageDraw

    font, pad = _font(size), 2
    boxes = [font.getbbox(word) for word in words]  # (left, top, right, bottom)
    widths = [right - left for left, _, right, _ in boxes]
    canvas_w = max(widths) + 2 * pad
    canvas_h = max(bottom - top for _, top, _, bottom in boxes) + 2 * pad
    masks = torch.zeros(len(words), 1, canvas_h, canvas_w)
    for i, (word, (left, top, right, bottom)) in enumerate(zip(words, boxes)):
        image = Image.new("L", (canvas_w, canvas_h), 0)
        x0 = (canvas_w - (right - left)) // 2 - left
        y0 = (canvas_h - (bottom - top)) // 2 - top
        ImageDraw.Draw(image).text((x0, y0), word, fill=255, font=font)
        masks[i, 0] = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(canvas_h, canvas_w) / 255
    return masks, torch.tensor(widths, dtype=torch.float32)


def _bank(split: str, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    key = (split, size, str(device))
    if key not in _BANKS:
        cpu_key = (split, size, "cpu")
        if cpu_key not in _BANKS:
            _BANKS[cpu_key] = render_bank(SPLITS[split], size)
        _BANKS[key] = tuple(t.to(device) for t in _BANKS[cpu_key])
    return _BANKS[key]


def _check(x: torch.Tensor, split: str, level: float) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown watermark split {split!r}; choose train or test")
    if not isinstance(level, (int, float)) or not math.isfinite(level) or not 0 < level <= 1:
        raise UserError(f"noise level {level} is invalid for 'watermark' noise: it must be an opacity in (0, 1]")
    if not x.is_floating_point() or x.dim() != 4:
        raise TypeError(f"apply_watermark needs a float batch [B, C, H, W] in [0, 1], got {x.dtype} {tuple(x.shape)}")


def _placement(u: torch.Tensor, widths: torch.Tensor, canvas: tuple[int, int], image: tuple[int, int]):
    """Uniforms [B, 5] (scale, angle, x, y) -> affine theta [B, 2, 3] from the image's
    normalised coordinates to the bank canvas's: p_canvas = R(-angle) (p_image - t) / scale."""
    (hb, wb), (h, w) = canvas, image
    scale = torch.minimum(0.8 + 0.45 * u[:, 0], 0.95 * w / widths.clamp_min(1))  # long words fit the width
    angle = (2 * u[:, 1] - 1) * math.radians(MAX_ANGLE_DEGREES)
    t = torch.stack([(u[:, 2] - 0.5) * 0.5 * w, (u[:, 3] - 0.5) * 0.5 * h], 1)  # [B, 2] centre offset, pixels
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # [B, 2, 2]: R(-angle)
    to_canvas = torch.tensor([2 / wb, 2 / hb], device=u.device)[None, :, None]  # pixels -> canvas units
    from_image = torch.tensor([w / 2, h / 2], device=u.device)[None, None, :]  # image units -> pixels
    linear = to_canvas * rotation * from_image / scale[:, None, None]
    shift = -(to_canvas[..., 0] * (rotation @ t[:, :, None])[..., 0]) / scale[:, None]
    return torch.cat([linear, shift[:, :, None]], 2)


def apply_watermark(x: torch.Tensor, generator: torch.Generator | None, split: str = "train",
                    level: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp one word of `split`'s list on each image of x [B, C, H, W] in [0, 1].

    Per image: a word, a scale (0.8..1.25 of the bank's font, shrunk to fit), an angle within
    +-30 degrees, an offset within a quarter of the image from its centre, an opacity of
    level x U(0.5, 1) and a light ink grey in [0.75, 1]. Returns (noisy in [0, 1], mask
    [B, 1, H, W]: 1 exactly where the stamp's alpha is > 0; elsewhere noisy == x bit for bit)."""
    _check(x, split, level)
    b, _, h, w = x.shape
    masks, widths = _bank(split, font_px(h, w), x.device)
    u = torch.rand((b, 7), generator=generator, device=x.device)  # word, scale, angle, x, y, opacity, ink
    idx = (u[:, 0] * len(masks)).long().clamp_max(len(masks) - 1)
    theta = _placement(u[:, 1:5], widths[idx], tuple(masks.shape[-2:]), (h, w))
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # [B, H, W, 2]
    alpha = F.grid_sample(masks[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    alpha = alpha * (level * (0.5 + 0.5 * u[:, 5]))[:, None, None, None]  # [B, 1, H, W]
    alpha = torch.where(alpha >= MIN_ALPHA, alpha, torch.zeros_like(alpha)).to(x.dtype)
    ink = (0.75 + 0.25 * u[:, 6]).to(x.dtype)[:, None, None, None]
    noisy = x * (1 - alpha) + ink * alpha  # a convex blend: stays in [0, 1]
    return noisy, (alpha > 0).to(x.dtype)


def psnr_region_sums(output: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Batch sums behind `psnr_in_region`, to add up over batches (`psnr_from_sums` ends it):
    per-image PSNR (dB, images in [0, 1]) summed inside the stamps, outside them and over whole
    images, with the image counts each sum is over."""
    se = (output.float() - clean.float()).square().mean(1)  # [B, H, W], channels averaged
    m = mask.float().reshape(se.shape)  # [B, 1, H, W] -> [B, H, W]
    sums = {}
    for name, weight in (("region", m), ("outside", 1 - m), ("image", torch.ones_like(m))):
        err, count = (se * weight).flatten(1).sum(1), weight.flatten(1).sum(1)  # [B], [B]
        keep = count > 0  # an image without stamped pixels has no region PSNR
        psnr = -10 * torch.log10((err[keep] / count[keep]).clamp_min(1e-10))
        sums[f"psnr_{name}_sum"], sums[f"n_{name}"] = float(psnr.sum()), int(keep.sum())
    sums["stamped_pixels"], sums["pixels"] = float(m.sum()), int(m.numel())
    return sums


def psnr_from_sums(sums: dict) -> dict:
    """Mean PSNRs (None where no image counted) and the stamped fraction from added-up sums."""
    out = {f"psnr_{name}": sums[f"psnr_{name}_sum"] / sums[f"n_{name}"] if sums[f"n_{name}"] else None
           for name in ("region", "outside", "image")}
    return {**out, "stamped_fraction": sums["stamped_pixels"] / max(1, sums["pixels"]),
            "n_stamped": sums["n_region"], "n_images": sums["n_image"]}


def psnr_in_region(output: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mean per-image PSNR inside the stamped region, outside it and over the whole image: how
    well a model removes a stamp and what it does to the rest. Images without a stamped pixel
    count only in `psnr_image` and `psnr_outside`."""
    return psnr_from_sums(psnr_region_sums(output, clean, mask))

"""An autoencoder as a lossy image codec: codes quantised to b bits per dimension, entropy
coded with the standard library's zlib and lzma, against PCA coded the same way and JPEG at
matched bits per pixel.

Quantiser: uniform mid-rise, per dimension, over [low, high] = the training codes' range:
2^b cells of width step = (high - low) / 2^b, each decoded to its centre. A code outside the
range is clipped to it first (the decoder never saw such codes in training either), so
|dequantize(quantize(c)) - clip(c)| <= step / 2. The cells of b + 1 bits halve those of b bits,
so the symbols' entropy can only grow with b. The range (2 x D floats) is part of the codec,
like the decoder's weights: it is not counted in the stream.

Rates are bits per pixel (H x W, the convention for colour images too): the length of the
actual encoded stream x 8 / (N x H x W). The N images' symbols go into one stream (an archive
of codes: the adaptive coders learn across images, and no per-image header is paid), and
what it decodes to is what the distortion is measured on. `bpp_entropy` is the ideal rate of
a coder with one fixed distribution per dimension (the symbols' empirical entropy).
"""

from __future__ import annotations

import io
import logging
import lzma
import zlib

import numpy as np

from aerun.errors import UserError

log = logging.getLogger("aerun.analysis")

MAX_BITS = 16
CODERS = ("packed", "zlib", "lzma")  # packed: exactly b bits a symbol, the fixed-rate reference
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9}]  # a raw stream: no container bytes


def check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise UserError(f"bits={bits!r} is invalid: give a whole number of bits per code dimension in 1..{MAX_BITS}")
    return int(bits)


def code_range(train_codes) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (low [D], high [D]) of the training codes [N, D]."""
    codes = np.asarray(train_codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"code_range needs [N >= 1, D] codes, got shape {codes.shape}")
    return codes.min(0), codes.max(0)


def _step(bits: int, low, high) -> np.ndarray:
    return (np.asarray(high, np.float64) - np.asarray(low, np.float64)) / 2**bits  # [D]; 0 for a constant dim


def quantize(codes, bits: int, low, high) -> np.ndarray:
    """[N, D] codes -> symbols [N, D] in 0..2^bits - 1 (uint8 up to 8 bits, else uint16)."""
    bits = check_bits(bits)
    low, step = np.asarray(low, np.float64), _step(bits, low, high)
    clipped = np.clip(np.asarray(codes, np.float64), low, high)
    cells = np.floor((clipped - low) / np.where(step > 0, step, 1.0))
    return np.clip(cells, 0, 2**bits - 1).astype(np.uint8 if bits <= 8 else np.uint16)


def dequantize(symbols, bits: int, low, high) -> np.ndarray:
    """Symbols [N, D] -> the centres of their cells [N, D] (float64)."""
    bits = check_bits(bits)
    return np.asarray(low, np.float64) + (np.asarray(symbols, np.float64) + 0.5) * _step(bits, low, high)


def encode_symbols(symbols: np.ndarray, bits: int, coder: str) -> bytes:
    """Symbols [N, D] -> one byte stream. Dimension-major (each dimension's symbols side by
    side, where their statistics are alike), little-endian, then bit-packed or compressed."""
    bits = check_bits(bits)
    stream = np.ascontiguousarray(symbols.T).astype("<u2" if bits > 8 else np.uint8)
    if coder == "packed":
        shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
        return np.packbits(((stream.astype(np.uint16)[..., None] >> shifts) & 1).astype(np.uint8)).tobytes()
    if coder == "zlib":
        return zlib.compress(stream.tobytes(), 9)
    if coder == "lzma":
        return lzma.compress(stream.tobytes(), format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    raise UserError(f"unknown coder {coder!r}; choose one of {', '.join(CODERS)}")


def decode_symbols(data: bytes, n: int, d: int, bits: int, coder: str) -> np.ndarray:
    """The inverse of `encode_symbols`: bytes -> symbols [n, d]."""
    bits = check_bits(bits)
    if coder == "packed":
        flat = np.unpackbits(np.frombuffer(data, np.uint8))[:n * d * bits].reshape(-1, bits).astype(np.uint16)
        values = flat @ (1 << np.arange(bits - 1, -1, -1, dtype=np.uint16))
    else:
        raw = zlib.decompress(data) if coder == "zlib" else \
            lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        values = np.frombuffer(raw, "<u2" if bits > 8 else np.uint8)
    return values.reshape(d, n).T.astype(np.uint8 if bits <= 8 else np.uint16)


def encode_codes(codes, bits: int, low, high, coder: str = "lzma") -> bytes:
    return encode_symbols(quantize(codes, bits, low, high), bits, coder)


def decode_codes(data: bytes, n: int, bits: int, low, high, coder: str = "lzma") -> np.ndarray:
    return dequantize(decode_symbols(data, n, len(np.atleast_1d(low)), bits, coder), bits, low, high)


def entropy_bits(symbols: np.ndarray) -> float:
    """Total bits of an ideal coder with one empirical distribution per dimension: sum_d N H_d."""
    total = 0.0
    for column in np.asarray(symbols).T:
        p = np.bincount(column) / len(column)
        p = p[p > 0]
        total -= len(column) * float((p * np.log2(p)).sum())
    return total


def _distortion(recon, images) -> tuple[float, float]:
    """(MSE per pixel, mean per-image PSNR in dB) of [N, C, H, W] images in [0, 1]."""
    mse = np.square(np.asarray(recon, np.float64) - np.asarray(images, np.float64)).reshape(len(images), -1).mean(1)
    return float(mse.mean()), float((-10 * np.log10(np.maximum(mse, 1e-10))).mean())


def rate_distortion(encode_fn, decode_fn, images, bits_list, train_codes, method: str = "autoencoder") -> list[dict]:
    """One row per b in bits_list (sorted): rates of every coder, the best one as `bpp`, the
    ideal entropy rate, and MSE / PSNR of decode_fn(the codes decoded from the stream).
    encode_fn: float images [N, C, H, W] -> codes [N, D]; decode_fn: codes -> images in [0, 1]."""
    bits_list = sorted({check_bits(b) for b in bits_list})
    if not bits_list:
        raise UserError("bits: give at least one number of bits per code dimension")
    images = np.asarray(images, np.float32)
    codes = np.asarray(encode_fn(images), np.float64)  # [N, D]
    low, high = code_range(train_codes)
    n, pixels = len(images), images.shape[-2] * images.shape[-1]
    outside = float(((codes < low) | (codes > high)).mean())
    rows = []
    for bits in bits_list:
        symbols = quantize(codes, bits, low, high)
        sizes = {}
        for coder in CODERS:
            data = encode_symbols(symbols, bits, coder)
            if not np.array_equal(decode_symbols(data, n, codes.shape[1], bits, coder), symbols):
                raise RuntimeError(f"the {coder} stream does not decode to its symbols")  # a bug, never data
            sizes[coder] = len(data)
        best = min(sizes, key=sizes.get)
        recon = decode_fn(dequantize(symbols, bits, low, high).astype(np.float32))  # [N, C, H, W]
        mse, psnr = _distortion(np.clip(np.asarray(recon), 0, 1), images)
        rows.append({"method": method, "bits": bits, "latent_dim": int(codes.shape[1]), "coder": best,
                     "bytes": sizes[best], "bpp": sizes[best] * 8 / (n * pixels),
                     **{f"bpp_{c}": size * 8 / (n * pixels) for c, size in sizes.items()},
                     "bpp_entropy": entropy_bits(symbols) / (n * pixels), "mse": mse, "psnr": psnr,
                     "clipped_fraction": outside, "n_images": n})
    if any(a["bpp"] > b["bpp"] or a["mse"] < b["mse"] for a, b in zip(rows, rows[1:])):
        log.warning("the %s rate-distortion curve is not monotone in bits: %s", method,
                    [(r["bits"], round(r["bpp"], 4), round(r["mse"], 6)) for r in rows])
    return rows


def model_codec(model, batch_size: int = 512):
    """(encode_fn, decode_fn) for `rate_distortion` from an aerun Autoencoder: float images
    [N, C, H, W] -> codes [N, D] (a VAE's posterior means) and back, batch by batch."""
    import torch

    device = next(model.parameters()).device
    model.eval()

    def run(fn, array):
        with torch.inference_mode():
            parts = [fn(torch.as_tensor(array[i:i + batch_size]).float().to(device)).float().cpu()
                     for i in range(0, len(array), batch_size)]
        return torch.cat(parts).numpy()

    return (lambda x: run(model.encode, x)), (lambda z: run(model.decode, z).clip(0, 1))


def pca_rate_distortion(train_images_uint8, images, n_components: int, bits_list,
                        batch_size: int = 4096) -> list[dict]:
    """The PCA baseline: the top n_components principal coordinates (the autoencoder's latent
    size), quantised over the training coordinates' range and coded as the codes are."""
    import torch

    from aerun.analysis.pca import fit_pca, flatten

    pca = fit_pca(train_images_uint8, n_components, batch_size)
    shape = tuple(train_images_uint8.shape[1:])
    train_codes = torch.cat([pca.encode(flatten(train_images_uint8[i:i + batch_size]))
                             for i in range(0, len(train_images_uint8), batch_size)]).numpy()

    def encode(x):  # [N, C, H, W] -> [N, k]
        return pca.encode(torch.as_tensor(x).flatten(1)).numpy()

    def decode(z):  # [N, k] -> [N, C, H, W]
        return pca.decode(torch.as_tensor(z)).float().reshape(-1, *shape).numpy()

    return rate_distortion(encode, decode, images, bits_list, train_codes, method="pca")


def _scan_bytes(data: bytes) -> int:
    """Bytes of a baseline JPEG's entropy-coded scan (after the SOS header, before EOI), found
    by walking the header segments (a table's bytes may hold 0xFFDA themselves)."""
    at = 2  # after SOI
    while data[at] == 0xFF and data[at + 1] != 0xDA:
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")  # marker + its length field's span
    return len(data) - (at + 2 + int.from_bytes(data[at + 2:at + 4], "big")) - 2


def jpeg_roundtrip(images_uint8: np.ndarray, quality: int) -> tuple[int, int, np.ndarray]:
    """(scan bytes, file bytes, decoded uint8 [N, C, H, W]) of each image as a baseline JPEG
    with the standard Huffman tables, grey images in mode "L"."""
    from PIL import Image

    channels = images_uint8.shape[1]
    if channels not in (1, 3):
        raise UserError(f"JPEG codes grey or RGB images; these have {channels} channels")
    scan = total = 0
    decoded = np.empty_like(images_uint8)
    for i, image in enumerate(images_uint8):
        pil = Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0), "L" if channels == 1 else "RGB")
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(quality), optimize=False, progressive=False)
        data = buffer.getvalue()
        scan, total = scan + _scan_bytes(data), total + len(data)
        back = np.asarray(Image.open(io.BytesIO(data)))
        decoded[i] = back[None] if channels == 1 else back.transpose(2, 0, 1)
    return scan, total, decoded


def jpeg_at_bpp(images, target_bpp: float, qualities=(1, 95)) -> dict:
    """`jpeg_matched` for one target."""
    return jpeg_matched(images, [target_bpp], qualities)[0]


def jpeg_matched(images, targets, qualities=(1, 95), tolerance: float = 0.1) -> list[dict]:
    """For each target bpp, JPEG at the quality (in qualities[0]..qualities[1]) whose bits per
    pixel come closest; `target_reached` when within `tolerance` of it (a 28 x 28 JPEG's scan
    takes ~0.4 bpp even at quality 1). Its bpp counts the scan only: the headers and tables
    (~330 bytes, 3.4 bpp on a 28 x 28 image) are the same for every image of a quality, so they
    are shared side information like the autoencoder's decoder; `bpp_with_headers` counts whole
    files. The qualities tried are shared between targets."""
    images = np.asarray(images, np.float32)
    as_uint8 = np.round(images * 255).clip(0, 255).astype(np.uint8)
    pixels = len(images) * images.shape[-2] * images.shape[-1]
    tried: dict[int, dict] = {}

    def measure(q) -> float:
        if q not in tried:
            scan, total, decoded = jpeg_roundtrip(as_uint8, q)
            mse, psnr = _distortion(decoded.astype(np.float32) / 255, images)
            tried[q] = {"quality": q, "bpp": scan * 8 / pixels, "bpp_with_headers": total * 8 / pixels,
                        "bytes": scan, "mse": mse, "psnr": psnr}
        return tried[q]["bpp"]

    rows = []
    for target in targets:
        lo, hi = qualities
        while hi - lo > 1:  # bpp grows with quality (nearly monotone): bisect instead of trying all 95
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if measure(mid) < target else (lo, mid)
        best = tried[min((lo, hi), key=lambda q: abs(measure(q) - target))]
        rows.append({"method": "jpeg", **best, "target_bpp": float(target),
                     "target_reached": abs(best["bpp"] - target) <= tolerance * target, "n_images": len(images)})
    return rows


def rd_figure(path, rows: list[dict], title: str) -> None:
    """PSNR against bits per pixel, one line per method, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from aerun.io import atomic_path

    fig = Figure(figsize=(5.5, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["bpp"], r["psnr"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*points), marker="o", markersize=3, label=method)
    ax.set(xlabel="bits per pixel", ylabel="PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")

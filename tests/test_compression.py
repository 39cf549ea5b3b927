"""The codes-as-a-codec measurement: the quantiser's bound, the streams whose bytes are
counted, a rate-distortion curve monotone in bits, and JPEG at a matched rate."""

from __future__ import annotations

import lzma
import zlib

import numpy as np
import pytest
import torch

from aerun.analysis.compression import (CODERS, code_range, decode_codes, decode_symbols, dequantize, encode_codes,
                                        encode_symbols, entropy_bits, jpeg_at_bpp, jpeg_matched, jpeg_roundtrip,
                                        model_codec, pca_rate_distortion, quantize, rate_distortion)
from aerun.errors import UserError
from tests.datasets_fixture import mnist_like_arrays


@pytest.fixture(scope="module")
def images():
    """uint8 train [256, 1, 28, 28] and float test [64, 1, 28, 28] of the fixture's block digits."""
    rng = np.random.default_rng(0)
    train, _ = mnist_like_arrays(256, rng)
    test, _ = mnist_like_arrays(64, rng)
    return torch.from_numpy(train[:, None]), test[:, None].astype(np.float32) / 255


@pytest.mark.parametrize("bits", [1, 3, 8, 12])
@pytest.mark.parametrize("coder", CODERS)
def test_decoded_codes_lie_within_half_a_step_of_the_clipped_codes(bits, coder):
    rng = np.random.default_rng(bits)
    train = rng.normal(size=(500, 5)) * [1, 2, 0.1, 5, 1]
    low, high = code_range(train)
    codes = rng.normal(size=(40, 5)) * [1, 2, 0.1, 5, 1] * 1.5  # some fall outside the training range
    data = encode_codes(codes, bits, low, high, coder)
    decoded = decode_codes(data, len(codes), bits, low, high, coder)
    step = (high - low) / 2**bits
    assert (np.abs(decoded - np.clip(codes, low, high)) <= step / 2 * (1 + 1e-9)).all()
    assert decoded.min() >= low.min() and (decoded <= high).all() and (decoded >= low).all()


def test_a_constant_dimension_and_the_symbol_range():
    train = np.array([[0.0, 2.0], [1.0, 2.0]])  # the second dimension never moves
    low, high = code_range(train)
    symbols = quantize([[-5.0, 2.0], [0.5, 9.0], [5.0, 2.0]], 2, low, high)
    assert symbols.tolist() == [[0, 0], [2, 0], [3, 0]] and symbols.dtype == np.uint8
    assert dequantize(symbols, 2, low, high).tolist() == [[0.125, 2.0], [0.625, 2.0], [0.875, 2.0]]
    assert quantize(train, 9, low, high).dtype == np.uint16


def test_the_counted_bytes_are_the_encoded_stream(images):
    train, test = images
    train_codes = train.flatten(1).float().numpy()[:, :50] / 255  # the first 50 pixels as "codes"
    rows = rate_distortion(lambda x: x.reshape(len(x), -1)[:, :50], lambda z: np.zeros((len(z), 1, 28, 28)),
                           test, [4], train_codes)
    row = rows[0]
    symbols = quantize(test.reshape(64, -1)[:, :50], 4, *code_range(train_codes))
    for coder in CODERS:
        data = encode_symbols(symbols, 4, coder)
        assert row[f"bpp_{coder}"] == len(data) * 8 / (64 * 28 * 28)
        assert np.array_equal(decode_symbols(data, 64, 50, 4, coder), symbols)
    assert row["bytes"] == len(encode_symbols(symbols, 4, row["coder"])) and row["bpp"] == min(
        row[f"bpp_{c}"] for c in CODERS)
    # the streams are what the standard library decompresses: dimension-major symbols
    assert zlib.decompress(encode_symbols(symbols, 4, "zlib")) == symbols.T.tobytes()
    raw = lzma.decompress(encode_symbols(symbols, 4, "lzma"), format=lzma.FORMAT_RAW,
                          filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
    assert raw == symbols.T.tobytes()
    assert len(encode_symbols(symbols, 4, "packed")) == 64 * 50 * 4 // 8
    assert row["bpp_entropy"] <= row["bpp_packed"] + 1e-12


def test_entropy_bits_on_known_symbols():
    symbols = np.array([[0, 1], [1, 1], [2, 1], [3, 1]])  # dim 0: 2 bits each, dim 1: constant
    assert entropy_bits(symbols) == pytest.approx(8.0)


def test_the_pca_curve_is_monotone_in_bits(images):
    train, test = images
    rows = pca_rate_distortion(train, test, n_components=8, bits_list=[6, 1, 2, 3, 4, 5, 8])
    assert [r["bits"] for r in rows] == [1, 2, 3, 4, 5, 6, 8]
    for a, b in zip(rows, rows[1:]):
        assert a["bpp"] < b["bpp"] and a["bpp_entropy"] <= b["bpp_entropy"]
        assert a["mse"] > b["mse"] and a["psnr"] < b["psnr"]
    assert rows[-1]["method"] == "pca" and rows[-1]["latent_dim"] == 8 and rows[-1]["n_images"] == 64
    # 8 components at 8 bits come close to the unquantised PCA reconstruction
    from aerun.analysis.pca import fit_pca

    pca = fit_pca(train, 8)
    flat = torch.from_numpy(test.reshape(64, -1))
    exact = ((pca.decode(pca.encode(flat)).clamp(0, 1) - flat.double()) ** 2).mean().item()
    assert rows[-1]["mse"] == pytest.approx(exact, rel=0.05)


def test_jpeg_lands_near_a_target_rate(images):
    _, test = images
    as_uint8 = np.round(test * 255).astype(np.uint8)
    scan, total, decoded = jpeg_roundtrip(as_uint8, 50)
    assert decoded.shape == as_uint8.shape and total > scan > 0
    target = scan * 8 / (64 * 28 * 28)
    row = jpeg_at_bpp(test, target)
    assert abs(row["bpp"] - target) <= 0.05 * target and row["bpp_with_headers"] > row["bpp"]
    assert row["target_reached"] and row["method"] == "jpeg" and row["n_images"] == 64
    low, mid, high = jpeg_matched(test, [0.0, target, 100.0])
    assert (low["quality"], high["quality"]) == (1, 95) and low["psnr"] < mid["psnr"] < high["psnr"]
    assert mid == row and not low["target_reached"] and not high["target_reached"]


@pytest.mark.parametrize("bits", [0, -2, 1.5, True, 17])
def test_bad_bits_are_refused_in_one_line(bits):
    with pytest.raises(UserError) as error:
        quantize(np.zeros((2, 2)), bits, np.zeros(2), np.ones(2))
    assert f"bits={bits!r}" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError):
        rate_distortion(lambda x: x, lambda z: z, np.zeros((2, 1, 2, 2)), [4, bits], np.zeros((2, 4)))


def test_an_autoencoder_codes_through_model_codec(images):
    from aerun.models.mlp import MLPAutoencoder

    train, test = images
    torch.manual_seed(0)
    model = MLPAutoencoder((1, 28, 28), latent_dim=4, hidden=(32,))
    encode, decode = model_codec(model, batch_size=16)
    train_codes = encode(train.float().numpy() / 255)
    assert train_codes.shape == (256, 4) and decode(train_codes[:3]).shape == (3, 1, 28, 28)
    rows = rate_distortion(encode, decode, test, [2, 6], train_codes)
    assert [r["bits"] for r in rows] == [2, 6] and rows[0]["bpp"] < rows[1]["bpp"]
    with torch.no_grad():
        exact = ((model.reconstruct(torch.from_numpy(test)) - torch.from_numpy(test)) ** 2).mean().item()
    assert rows[1]["mse"] == pytest.approx(exact, rel=0.05)  # 6 bits: close to the unquantised codes

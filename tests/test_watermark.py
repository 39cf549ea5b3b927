"""Watermark noise: seeded stamps, a mask that is exactly where the image changed, disjoint
train/test text, outputs in [0, 1], and the PSNR inside the stamped region."""

from __future__ import annotations

import math

import pytest
import torch

from aerun.data import watermark
from aerun.data.watermark import (TEST_WORDS, TRAIN_WORDS, apply_watermark, psnr_from_sums, psnr_in_region,
                                  psnr_region_sums)
from aerun.errors import UserError


def batch(shape=(16, 1, 28, 28), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def test_the_same_seed_gives_the_same_stamps_and_another_seed_others():
    x = batch()
    a = apply_watermark(x, torch.Generator().manual_seed(3), "train", 0.7)
    b = apply_watermark(x, torch.Generator().manual_seed(3), "train", 0.7)
    c = apply_watermark(x, torch.Generator().manual_seed(4), "train", 0.7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    # one stream, two batches: the second batch's stamps differ from the first's
    g = torch.Generator().manual_seed(3)
    first, second = apply_watermark(x, g, "train", 0.7), apply_watermark(x, g, "train", 0.7)
    assert torch.equal(first[0], a[0]) and not torch.equal(second[1], first[1])


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 32, 32)])
def test_the_mask_is_exactly_where_the_image_changed(shape):
    x = batch(shape)
    noisy, mask = apply_watermark(x, torch.Generator().manual_seed(0), "test", 1.0)
    assert mask.shape == (shape[0], 1, *shape[2:]) and set(mask.unique().tolist()) <= {0.0, 1.0}
    unchanged = (mask == 0).expand_as(x)
    assert torch.equal(noisy[unchanged], x[unchanged])  # bit for bit outside the stamps
    assert ((noisy != x).any(1, keepdim=True) <= (mask > 0)).all()
    assert (mask.flatten(1).sum(1) > 0).all() and mask.mean() < 0.5  # every image stamped, a part of it
    black = torch.zeros(shape)
    stamped, black_mask = apply_watermark(black, torch.Generator().manual_seed(0), "test", 1.0)
    assert torch.equal(black_mask, mask)  # the stamps do not depend on the image
    assert ((stamped > 0) == (black_mask > 0).expand_as(black)).all()  # light ink shows on black


def test_outputs_stay_in_the_unit_interval():
    g = torch.Generator().manual_seed(1)
    for x in (torch.zeros(8, 1, 28, 28), torch.ones(8, 1, 28, 28), batch((8, 3, 32, 32)) * 2):
        for level in (0.05, 0.5, 1.0):
            noisy, _ = apply_watermark(x, g, "train", level)
            assert noisy.min() >= 0 and noisy.max() <= 1 and noisy.dtype == x.dtype


def test_a_lower_level_is_a_fainter_stamp():
    x = torch.zeros(32, 1, 28, 28)
    faint = apply_watermark(x, torch.Generator().manual_seed(2), "train", 0.2)[0]
    strong = apply_watermark(x, torch.Generator().manual_seed(2), "train", 1.0)[0]
    assert 0 < faint.max() < 0.21 and faint.sum() < strong.sum() / 4


def test_train_and_test_text_are_disjoint_and_each_split_draws_its_own(monkeypatch):
    assert not set(TRAIN_WORDS) & set(TEST_WORDS) and len(TEST_WORDS) >= 10
    rendered = []
    real = watermark.render_bank

    def recording(words, size):
        rendered.append(tuple(words))
        return real(words, size)

    monkeypatch.setattr(watermark, "render_bank", recording)
    monkeypatch.setattr(watermark, "_BANKS", {})
    apply_watermark(batch(), torch.Generator().manual_seed(0), "test", 0.5)
    apply_watermark(batch(), torch.Generator().manual_seed(0), "test", 0.5)  # the bank is rendered once
    assert rendered == [TEST_WORDS]
    apply_watermark(batch(), torch.Generator().manual_seed(0), "train", 0.5)
    assert rendered == [TEST_WORDS, TRAIN_WORDS]
    masks, widths = watermark._BANKS[("test", watermark.font_px(28, 28), "cpu")]
    assert masks.shape[0] == len(TEST_WORDS) and (widths > 0).all() and masks.max() > 0.99


@pytest.mark.parametrize("level", [0, -0.1, 1.5, math.nan])
def test_bad_levels_and_splits_are_refused(level):
    with pytest.raises(UserError, match="opacity in \\(0, 1\\]"):
        apply_watermark(batch(), None, "train", level)
    with pytest.raises(UserError, match="train or test"):
        apply_watermark(batch(), None, "val", 0.5)


def test_psnr_in_region_reads_the_stamped_and_the_other_pixels_apart():
    clean = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2] = 1  # image 0: the top half stamped; image 1: nothing
    output = clean + 0.1 * mask + 0.01 * (1 - mask)
    result = psnr_in_region(output, clean, mask)
    assert result["psnr_region"] == pytest.approx(20.0, abs=1e-4)  # only image 0 has a region
    assert result["psnr_outside"] == pytest.approx(40.0, abs=1e-4)
    whole0 = -10 * math.log10((8 * 0.01 + 8 * 0.0001) / 16)
    assert result["psnr_image"] == pytest.approx((whole0 + 40.0) / 2, abs=1e-4)
    assert result["n_stamped"] == 1 and result["stamped_fraction"] == pytest.approx(8 / 32)
    # batch sums add up to the whole set's means
    halves = [psnr_region_sums(output[i:i + 1], clean[i:i + 1], mask[i:i + 1]) for i in range(2)]
    total = {key: halves[0][key] + halves[1][key] for key in halves[0]}
    assert psnr_from_sums(total) == pytest.approx(result)

"""Every gallery experiment config composes and trains under debug=smoke, so none rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def test_the_gallery_is_complete():
    assert set(EXPERIMENTS) >= {"shallow_mnist", "linear_ae_2d", "cnn_mnist", "denoise_mnist", "sparse_mnist",
                                "stacked_fashion", "vae_2d", "beta_vae", "cifar_cnn", "kmeans_codes",
                                "pretrain_finetune"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_under_smoke(trained_run, name):
    run_dir = trained_run(f"experiment={name}", "debug=smoke")
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0 < metrics["test"]["mse"] < 0.5

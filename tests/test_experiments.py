"""Every gallery experiment config composes and trains under debug=smoke, so none rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, compose

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def test_the_gallery_is_complete():
    assert set(EXPERIMENTS) >= {"shallow_mnist", "linear_ae_2d", "cnn_mnist", "denoise_mnist", "sparse_mnist",
                                "stacked_fashion", "vae_2d", "beta_vae", "cifar_cnn", "kmeans_codes",
                                "pretrain_finetune"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_under_smoke(trained_run, name):
    """Each experiment's config takes effect (its model is what was trained) and the run learns:
    its test error is well below that of the same model at initialisation."""
    import torch

    from aerun import runs
    from aerun.build import build_model
    from aerun.data import load_dataset
    from aerun.engine import evaluate

    run_dir = Path(trained_run(f"experiment={name}", "debug=smoke", "trainer.max_epochs=4"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = runs.load_run(run_dir).config
    experiment = compose("train", [f"experiment={name}"])
    assert config["model"]["_target_"] == experiment.model._target_
    assert config["model"]["latent_dim"] == experiment.model.latent_dim and metrics["epochs"] == 4
    d = config["data"]
    dataset = load_dataset(d["name"], d["root"], val_size=d["val_size"], max_test_samples=d["max_test_samples"])
    torch.manual_seed(config["seed"])
    untrained = evaluate(build_model(config["model"], dataset.image_shape), dataset.test.images,
                         recon_loss=metrics["recon_loss"])
    assert metrics["test"]["mse"] < 0.9 * untrained["mse"]

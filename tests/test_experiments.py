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
                                "pretrain_finetune", "svae_vs_nvae", "vaegan_mnist", "cvae_digits", "rbm_mnist",
                                "deep_ae_hinton", "unpool_mnist", "seq_lstm_mnist", "cabessa_recipe"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_under_smoke(trained_run, name):
    """Each experiment's config takes effect (its model is what was trained) and the run learns:
    its test error is well below that of the same model at initialisation."""
    import torch

    from aerun import runs
    from aerun.build import build_model
    from aerun.data import load_dataset
    from aerun.engine import evaluate

    experiment = compose("train", [f"experiment={name}"])
    staged = "pretrain" in experiment.model and experiment.model.pretrain != "none"
    pretraining = len(experiment.model.layers) + 1 if staged else 0
    epochs = 4 + pretraining  # staged families: one epoch per pretraining stage, then 4 epochs of the whole
    extra = ["model.pretrain_epochs=1"] if staged else []
    run_dir = Path(trained_run(f"experiment={name}", "debug=smoke", f"trainer.max_epochs={epochs}", *extra))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = runs.load_run(run_dir).config
    assert config["model"]["_target_"] == experiment.model._target_
    assert config["model"]["latent_dim"] == experiment.model.latent_dim and metrics["epochs"] == epochs
    d = config["data"]
    dataset = load_dataset(d["name"], d["root"], val_size=d["val_size"], max_test_samples=d["max_test_samples"])
    torch.manual_seed(config["seed"])
    untrained = evaluate(build_model(config["model"], dataset.image_shape, len(dataset.classes)), dataset.test.images,
                         dataset.test.labels,
                         recon_loss=metrics["recon_loss"])
    assert metrics["test"]["mse"] < 0.9 * untrained["mse"]


@pytest.mark.parametrize("variant", [["model.pretrain=greedy"], ["model.tied_weights=true"],
                                     ["model.pretrain=none", "model.pretrain_epochs=1"],
                                     ["trainer.max_epochs=200", "optim.scheduler=cosine"]])
def test_the_deep_ae_experiments_documented_comparisons_are_accepted(variant, data_root):
    """The YAML's comment names these runs; each must pass validation as written there."""
    from aerun.commands.train import validate

    validate(compose("train", ["experiment=deep_ae_hinton", f"data.root={data_root}", *variant]))


def test_no_pretraining_with_the_experiments_stage_length_is_refused_in_one_line(data_root):
    from aerun.commands.train import validate
    from aerun.errors import UserError

    with pytest.raises(UserError, match="model.pretrain_epochs=10: has no effect with model.pretrain=none"):
        validate(compose("train", ["experiment=deep_ae_hinton", f"data.root={data_root}", "model.pretrain=none"]))


def test_a_gallery_run_with_only_keeps_the_rows_it_has_no_results_for(tmp_path):
    """On a fresh clone (no cached rows), `docs/gallery.py --only NAME` rewrites NAME's row and
    keeps every other row of the committed table instead of dropping it."""
    import sys
    from dataclasses import asdict

    sys.path.insert(0, str(REPO / "docs"))
    import gallery

    first, second, third = gallery.EXPERIMENTS[:3]
    earlier = tmp_path / "gallery.md"
    earlier.write_text(f"| experiment | figure |\n|---|---|\n| `{first}` | old first |\n| `{third}` | old third |\n")
    g = gallery.Gallery(tmp_path, False, False, tmp_path / "out", tmp_path)
    fresh = gallery.Row(second, commands=["aerun train"], numbers=["new"], epochs="1")
    kept = gallery.earlier_rows(earlier, set(gallery.EXPERIMENTS) - {second})
    text = gallery.write_markdown(g, [asdict(fresh)], "data", 1.0, kept).read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0] == f"| `{first}` | old first |" and rows[2] == f"| `{third}` | old third |"
    assert rows[1].startswith(f"| `{second}` |") and "new" in rows[1] and "2 rows kept from an earlier table" in text

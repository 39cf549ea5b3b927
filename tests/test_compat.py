"""Runs written before the core redesign (aerun-checkpoint-v1: one `optimizer`, `optim.name`,
flat scheduler keys) still load, encode and resume, and resume to the numbers the old code got."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, run_aerun
from tests.datasets_fixture import make_mnist_like

LEGACY = REPO / "tests" / "fixtures" / "legacy_v1_run"


@pytest.fixture
def legacy_run(tmp_path) -> Path:
    """A copy of the v1 run, with the tiny MNIST it was trained on where its data.root says."""
    make_mnist_like(tmp_path / "data", n_train=256, n_test=64, gz=True)
    run = tmp_path / "legacy_run"
    shutil.copytree(LEGACY, run)
    return run


def test_a_v1_checkpoint_loads_and_its_config_is_upgraded(legacy_run):
    from aerun import runs

    loaded = runs.load_run(legacy_run)
    assert loaded.checkpoint["format"] == "aerun-checkpoint-v1"
    optim = loaded.config["optim"]
    assert optim["_target_"] == "torch.optim.SGD" and optim["momentum"] == 0.9
    assert optim["scheduler"]["_target_"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert "kill_at_step" not in loaded.config["trainer"]
    assert type(loaded.model).__name__ == "MLPAutoencoder" and loaded.model.latent_dim == 2


def test_a_v1_run_encodes(legacy_run, tmp_path):
    proc = run_aerun("encode", str(legacy_run), "device=cpu", f"hydra.run.dir={tmp_path / 'enc'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    assert np.load(tmp_path / "enc" / "codes.npz")["codes"].shape == (64, 2)


@pytest.mark.slow
def test_a_v1_run_resumes_to_the_metrics_the_old_code_reached(legacy_run, tmp_path):
    """Resumed with trainer.max_epochs=2 it ends where the v1 code's own resume ended (the run
    is deterministic on CPU), and its new last.pt is v2."""
    expected = json.loads((REPO / "tests" / "fixtures" / "legacy_v1_run_resumed_to_2_epochs.json").read_text())
    proc = run_aerun("train", f"resume={legacy_run}", "trainer.max_epochs=2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((legacy_run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["test"]["mse"] == pytest.approx(expected["test"]["mse"], rel=1e-6)
    assert metrics["val"]["loss"] == pytest.approx(expected["val"]["loss"], rel=1e-6)
    import torch

    assert torch.load(legacy_run / "last.pt", weights_only=True)["format"] == "aerun-checkpoint-v2"


def test_an_rbm_run_from_before_model_reconstruction_keeps_its_binary_negative_phase():
    """Those runs sampled the negative phase's visible state: resuming one must not switch it to
    today's default (probabilities) unnoticed."""
    from aerun.runs import upgrade_config

    for target in ("aerun.models.RBM", "aerun.models.DBN"):
        old = {"model": {"_target_": target, "cd_k": 1, "persistent": False, "binarize": False}}
        assert upgrade_config(old)["model"]["reconstruction"] == "binary"
        pcd = {"model": {**old["model"], "persistent": True}}
        assert upgrade_config(pcd)["model"]["reconstruction"] == "auto"  # which samples, as PCD always did
        today = {"model": {**old["model"], "reconstruction": "auto"}}
        assert upgrade_config(today)["model"]["reconstruction"] == "auto"
    assert "reconstruction" not in upgrade_config({"model": {"_target_": "aerun.models.MLPAutoencoder"}})["model"]

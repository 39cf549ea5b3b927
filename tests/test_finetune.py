"""`aerun finetune`: a classifier on a pretrained encoder vs the same classifier from scratch."""

from __future__ import annotations

import json

import pytest
import torch

from aerun import runs
from aerun.analysis.classifier import EncoderClassifier, labelled_subset, train_classifier
from tests.conftest import run_aerun


@pytest.mark.slow
def test_finetune_writes_the_comparison_and_the_pretrained_encoder_helps(trained_run, tmp_path):
    # enough steps for the tiny AE to learn the class blocks (mse ~0.011, well under the data's variance 0.027)
    run_dir = trained_run("model=mlp_ae", "model.latent_dim=16", "model.hidden=[64]", "trainer.max_epochs=20",
                          "optim.lr=2e-3", "trainer.batch_size=16")
    out = tmp_path / "ft"
    proc = run_aerun("finetune", str(run_dir), "labels_per_class=[1,5]", "finetune.steps=100", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "finetune.json").read_text())
    assert [r["labels_per_class"] for r in report["results"]] == [1, 5]
    assert [r["labelled_images"] for r in report["results"]] == [10, 50]
    for row in report["results"]:
        assert 0 <= row["scratch_accuracy"] <= 1
        assert row["gain"] == row["pretrained_accuracy"] - row["scratch_accuracy"]
    assert report["results"][-1]["pretrained_accuracy"] > 0.4  # 10 classes: chance is 0.1
    assert (out / "finetune.png").is_file() and "| labels per class |" in (out / "finetune.md").read_text()
    assert "| 5 |" in proc.stdout
    assert not (run_dir / "finetune.json").exists()  # the trained run is left as it was


def test_frozen_encoder_does_not_change_and_unfrozen_does(trained_run):
    loaded = runs.load_run(trained_run("model=linear_ae"))
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    images = torch.randint(0, 255, (32, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(32) % 10
    frozen = EncoderClassifier(loaded.model, 10, "mlp", 16, freeze_encoder=True)
    train_classifier(frozen, images, labels, steps=5, batch_size=8, lr=1e-2, seed=0, device="cpu")
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())
    tuned = EncoderClassifier(loaded.model, 10, "linear", 16, freeze_encoder=False)
    train_classifier(tuned, images, labels, steps=5, batch_size=8, lr=1e-2, seed=0, device="cpu")
    first_layer = next(k for k in before if k.endswith("weight"))
    assert not torch.equal(before[first_layer], loaded.model.state_dict()[first_layer])


def test_labelled_subset_takes_that_many_of_each_class():
    labels = torch.arange(100) % 10
    idx = labelled_subset(labels, 3, 10, seed=1)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [3] * 10
    assert torch.equal(idx, labelled_subset(labels, 3, 10, seed=1))


def test_bad_labels_per_class_and_missing_run(tmp_path, trained_run):
    proc = run_aerun("finetune", f"run={tmp_path / 'nope'}")
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    run_dir = trained_run("model=linear_ae")
    proc = run_aerun("finetune", str(run_dir), "labels_per_class=0", cwd=tmp_path)
    assert proc.returncode == 2 and "labels_per_class" in proc.stderr.strip().splitlines()[-1]

"""Anomaly detection: AUROC / AUPRC against scikit-learn and their analytic cases, the score
functions on small models, the protocol label helpers and the ROC figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from aerun.analysis.anomaly import (anomaly_report, auprc, auroc, code_density_scores, elbo_scores,
                                    free_energy_scores, held_out_labels, one_class_labels, ood_labels,
                                    reconstruction_scores, roc_curve_points, roc_figure, training_indices)
from aerun.errors import UserError


def test_auroc_and_auprc_match_scikit_learn_and_the_textbook_example():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auprc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx((1 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + y, 1)  # rounded: ties too
    assert auroc(scores, y) == roc_auc_score(y, scores)
    assert auprc(scores, y) == average_precision_score(y, scores)


def test_an_oracle_scores_one_and_a_constant_one_half():
    y = np.array([0, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    assert auroc(y.astype(float), y) == 1.0 and auprc(y.astype(float) * 5, y) == 1.0
    assert auroc(-y.astype(float), y) == 0.0
    assert auroc(np.full(8, 3.0), y) == 0.5
    report = anomaly_report(y * 2.0, y)
    assert report["auroc"] == 1.0 and report["n_normal"] == 4 and report["n_anomalous"] == 4
    assert report["anomaly_fraction"] == 0.5 and report["mean_score_anomalous"] == 2.0


def test_roc_points_run_from_the_origin_to_one_and_one_class_only_is_refused():
    fpr, tpr, thresholds = roc_curve_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert len(thresholds) == len(fpr) and all(np.isfinite(thresholds))
    with pytest.raises(UserError) as error:
        auroc([0.1, 0.2], [0, 0])
    assert "normal and anomalous" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="not finite"):
        auroc([0.1, np.nan], [0, 1])


def test_protocol_labels():
    labels = np.array([0, 1, 2, 3, 1, 9])
    assert one_class_labels(labels, [1]).tolist() == [True, False, True, True, False, True]
    assert held_out_labels(labels, [2, 3]).tolist() == [False, False, True, True, False, False]
    assert (held_out_labels(labels, [2, 3]) == one_class_labels(labels, [0, 1, 4, 5, 6, 7, 8, 9])).all()
    assert training_indices(labels, lambda y: ~held_out_labels(y, [1])).tolist() == [0, 2, 3, 5]
    assert ood_labels(2, 3).tolist() == [False, False, True, True, True]
    for bad in ([], [10], list(range(10))):
        with pytest.raises(UserError):
            held_out_labels(labels, bad, n_classes=10)


def small_models():
    from aerun.models.mlp import VAE, MLPAutoencoder

    torch.manual_seed(0)
    return MLPAutoencoder((1, 8, 8), latent_dim=3, hidden=(16,)), VAE((1, 8, 8), latent_dim=3, hidden=(16,))


def test_reconstruction_scores_are_the_per_image_error_of_the_reconstruction():
    ae, vae = small_models()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for model in (ae, vae):
        recon = model.reconstruct(x)
        mse = (recon - x).square().flatten(1).mean(1)
        bce = torch.nn.functional.binary_cross_entropy(recon, x, reduction="none").flatten(1).mean(1)
        assert np.allclose(reconstruction_scores(model, x, "mse", batch_size=3), mse.numpy(), rtol=1e-5)
        assert np.allclose(reconstruction_scores(model, x, "bce", batch_size=4), bce.numpy(), rtol=1e-4)
    uint8 = (x * 255).round().to(torch.uint8)
    assert np.allclose(reconstruction_scores(ae, uint8), reconstruction_scores(ae, uint8.float() / 255))
    with pytest.raises(UserError, match="mse or bce"):
        reconstruction_scores(ae, x, "l1")


def test_elbo_scores_are_the_negative_elbo_of_the_importance_bound_with_one_sample():
    from aerun.analysis.likelihood import importance_weighted_bound

    ae, vae = small_models()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    scores = elbo_scores(vae, x, "bce", batch_size=64, num_samples=1, seed=5)
    bound = importance_weighted_bound(vae, x, 1, 64, "bce", torch.Generator().manual_seed(5))
    assert np.allclose(scores, -bound["elbo"].numpy(), rtol=1e-5)
    many = elbo_scores(vae, x, "bce", num_samples=64, seed=0)
    assert np.allclose(elbo_scores(vae, x, "bce", num_samples=64, seed=0), many)  # seeded
    assert (many > 0).all()
    with pytest.raises(UserError, match="needs a model with a prior"):
        elbo_scores(ae, x, "bce")


def test_code_density_scores_are_the_gaussian_negative_log_density_for_one_component():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, 2)) @ np.array([[1.0, 0.3], [0.0, 0.5]])
    test = np.array([[0.0, 0.0], [1.0, 0.0], [6.0, -6.0]])
    scores = code_density_scores(train, test, components=1)
    covariance = np.cov(train, rowvar=False, bias=True) + 1e-4 * np.eye(2)
    expected = -multivariate_normal(train.mean(0), covariance).logpdf(test)
    assert np.allclose(scores, expected, rtol=1e-6)
    assert scores[0] < scores[1] < scores[2]
    with pytest.raises(UserError, match="components"):
        code_density_scores(train[:3], test, components=5)


def test_free_energy_scores_call_the_models_own_free_energy():
    class Energy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def free_energy(self, x):
            return self.scale * x.flatten(1).sum(1)

    x = torch.ones(5, 1, 2, 2)
    assert free_energy_scores(Energy(), x, batch_size=2).tolist() == [8.0] * 5
    with pytest.raises(UserError, match="free energy"):
        free_energy_scores(small_models()[0], x)


def test_roc_figure_is_written_as_a_png(tmp_path):
    fpr, tpr, _ = roc_curve_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    path = tmp_path / "figures" / "roc.png"
    roc_figure(path, {"reconstruction": (fpr, tpr, 0.75)}, "held-out class 3")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["roc.png"]

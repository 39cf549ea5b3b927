"""Codes as features: how well a linear probe and k-means read the classes from them, and
how sparse deterministic codes are."""

from __future__ import annotations

import logging

log = logging.getLogger("aerun.analysis")


def sparsity_stats(model, codes, threshold: float) -> dict:
    """How sparse the test codes [N, D] are: near-zero entries, mean activation, dead units."""
    import torch

    near_zero = codes.abs() < threshold  # [N, D]
    kind = getattr(model, "sparsity_kind", "none")
    stats = {"kind": kind, "threshold": threshold,
             "zero_fraction": near_zero.float().mean().item(),
             "active_per_code": (~near_zero).float().sum(1).mean().item(),
             "dead_units": int(near_zero.all(0).sum()),
             "mean_abs_code": codes.abs().mean().item()}
    if kind == "kl":
        with torch.no_grad():
            activations = model.sparsity_activations(codes)
        stats["mean_activation"] = activations.mean().item()  # what the KL penalty pulls towards rho
        stats["target_rho"] = model.sparsity_rho
    else:
        stats["mean_activation"] = stats["mean_abs_code"]
    if kind != "none":
        stats["weight"] = model.sparsity_weight
    return stats


def linear_probe(train_codes, train_labels, test_codes, test_labels, seed: int = 0) -> float | None:
    """Test accuracy of a logistic regression on standardised codes (None if it cannot be fitted)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_labels)) < 2 or len(test_labels) == 0:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_codes, train_labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.info("the linear probe stopped at max_iter=1000 before converging")
    return float(probe.score(test_codes, test_labels))


def kmeans_nmi(codes, labels, n_clusters: int, seed: int = 0, n_init: int = 4) -> float | None:
    """NMI between k-means clusters of the (raw, unscaled) codes and the labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    if len(codes) < n_clusters:
        return None
    clusters = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(codes)
    return float(normalized_mutual_info_score(labels, clusters))



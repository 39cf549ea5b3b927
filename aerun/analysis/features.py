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




def kmeans_clusters(codes, n_clusters: int, seed: int = 0, n_init: int = 4):
    """k-means cluster of each code [N] (int64) and the fitted centres [k, D]."""
    import numpy as np
    from sklearn.cluster import KMeans

    from aerun.errors import UserError

    if len(codes) < n_clusters:
        raise UserError(f"encode.kmeans={n_clusters}: more clusters than the {len(codes)} codes of this split")
    fit = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(np.asarray(codes, dtype=np.float64))
    return fit.labels_.astype(np.int64), fit.cluster_centers_


def cluster_report(clusters, labels, class_names: list[str]) -> dict:
    """How k-means clusters line up with the classes: the confusion matrix [cluster, class],
    NMI, adjusted Rand index, and the accuracy of the best one-to-one cluster -> class map
    (Hungarian assignment; clusters left without a class count as errors)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters, labels = np.asarray(clusters), np.asarray(labels)
    k, n_classes = int(clusters.max()) + 1, len(class_names)
    confusion = np.zeros((k, n_classes), dtype=np.int64)
    np.add.at(confusion, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return {"n": int(len(labels)), "k": k, "classes": list(class_names), "confusion": confusion.tolist(),
            "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters)),
            "matched_accuracy": float(confusion[rows, cols].sum() / len(labels)),
            "cluster_to_class": {int(r): class_names[c] for r, c in zip(rows, cols)},
            "purity": float(confusion.max(1).sum() / len(labels))}


def format_confusion(report: dict) -> str:
    """The confusion matrix as a markdown table, rows = clusters (with their matched class)."""
    names = report["classes"]
    lines = ["| cluster (matched class) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for i, row in enumerate(report["confusion"]):
        matched = report["cluster_to_class"].get(i, "-")
        lines.append(f"| {i} ({matched}) | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)

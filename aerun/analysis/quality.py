"""Sample quality against real images, in the judge's feature space (`aerun.analysis.judge`):
the Frechet distance (FID's formula on the judge's features, not Inception's: comparable
between runs on one dataset, not with published FIDs), precision and recall (Kynkaenniemi et
al. 2019) and the class histogram of the judge's predictions (mode collapse shows as a low
entropy). Everything returned is plain floats and lists, ready for JSON.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from aerun.errors import UserError


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """[N, F] -> mean [F] and covariance [F, F] (float64, unbiased) of the features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_stats needs [N >= 2, F] features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a (numerically) PSD matrix; negative eigenvalues -> 0."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr((s1 s2)^(1/2)), the Frechet distance of two Gaussians.

    tr((s1 s2)^(1/2)) is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix s1^(1/2) s2 s1^(1/2) (the same eigenvalues as s1 s2): no complex sqrtm, no tiny
    imaginary parts, and singular covariances (fewer samples than features) are fine. As in
    pytorch-fid, `eps` is added to both diagonals only if the result is not finite."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    for offset in (0.0, eps):
        s1 = sigma1 + offset * np.eye(len(mu1))
        s2 = sigma2 + offset * np.eye(len(mu1))
        root1 = _psd_sqrt(s1)
        eigenvalues = np.linalg.eigvalsh(root1 @ s2 @ root1)
        trace_sqrt = np.sqrt(eigenvalues.clip(min=0)).sum()
        distance = float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)
        if math.isfinite(distance):
            return max(distance, 0.0)  # rounding can leave -1e-12 for identical statistics
    raise ValueError("the Frechet distance is not finite: the statistics hold NaN or inf")


def _rows_per_block(n_columns: int, memory_bytes: int) -> int:
    return max(1, memory_bytes // (8 * max(1, n_columns)))


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, F], [m, F] float64 -> [n, m] squared Euclidean distances."""
    d = (a @ b.T).mul_(-2).add_(a.square().sum(1, keepdim=True)).add_(b.square().sum(1))  # in place: one [n, m]
    return d.clamp_(min=0)


def knn_radii(features: torch.Tensor, k: int, memory_bytes: int) -> torch.Tensor:
    """[N, F] -> [N] squared distance of each point to its k-th nearest other point."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise UserError(f"precision/recall with k={k} needs more than k samples in each set, got {n}")
    rows = _rows_per_block(n, memory_bytes)
    radii = [torch.zeros(0, dtype=torch.float64)]
    for start in range(0, n, rows):
        d = _squared_distances(features[start:start + rows], features)  # [rows, N]
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0 is the point itself
    return torch.cat(radii)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, memory_bytes: int) -> float:
    """Fraction of `points` inside at least one ball (centre, radius) of the other set."""
    rows = _rows_per_block(len(centres), memory_bytes)
    inside = 0
    for start in range(0, len(points), rows):
        d = _squared_distances(points[start:start + rows], centres)  # [rows, M]
        inside += int((d <= radii[None]).any(1).sum())
    return inside / len(points)


def precision_recall(real_features, fake_features, k: int = 3,
                     memory_bytes: int = 64 * 2**20) -> dict[str, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019): each set's manifold is the
    union of balls reaching each point's k-th nearest neighbour in its own set; precision is
    the fraction of fakes inside the real manifold, recall the fraction of reals inside the fake
    one. Distances go in row blocks of `memory_bytes` (float64; about twice that at the peak), never
    N x M at once: 10,000 x 10,000 peaks near 150 MB."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64)
    real_radii = knn_radii(real, k, memory_bytes)
    fake_radii = knn_radii(fake, k, memory_bytes)
    return {"precision": _coverage(fake, real, real_radii, memory_bytes),
            "recall": _coverage(real, fake, fake_radii, memory_bytes), "k": k}


def class_histogram(labels, n_classes: int) -> dict:
    """Counts, fractions and entropy (nats, and over log K: 1 = uniform) of predicted labels."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    if labels.size == 0:
        raise ValueError("class_histogram needs at least one label")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=n_classes)
    fractions = counts / counts.sum()
    nonzero = fractions[fractions > 0]
    entropy = max(0.0, float(-(nonzero * np.log(nonzero)).sum()))  # not -0.0 for one class
    return {"counts": counts.tolist(), "fractions": fractions.tolist(), "entropy_nats": entropy,
            "entropy_normalised": entropy / math.log(n_classes) if n_classes > 1 else 1.0,
            "most_frequent": {"class": int(counts.argmax()), "fraction": float(fractions.max())},
            "least_frequent": {"class": int(counts.argmin()), "fraction": float(fractions.min())}}


def sample_quality(judge, samples_float, reference_float, batch_size: int = 512, n_classes: int | None = None,
                   k: int = 3) -> dict:
    """Frechet distance, precision / recall (k) and the predicted class histogram of samples
    [N, C, H, W] in [0, 1] against reference images (the real test split), in judge features;
    n_classes defaults to the judge's.

    The Frechet distance is biased upwards at small N (it needs N well above the 128 features
    for a stable covariance): compare runs at the same n_samples."""
    from aerun.analysis.judge import judge_outputs

    for what, images in (("samples", samples_float), ("reference images", reference_float)):
        if len(images) <= k:
            raise UserError(f"sample quality needs more than k={k} {what}, got {len(images)}")
    fake_features, fake_labels = judge_outputs(judge, samples_float, batch_size)
    real_features, _ = judge_outputs(judge, reference_float, batch_size)
    distance = frechet_distance(*feature_stats(fake_features), *feature_stats(real_features))
    pr = precision_recall(real_features, fake_features, k)
    histogram = class_histogram(fake_labels.numpy(), n_classes or judge.n_classes)
    accuracy = getattr(judge, "test_accuracy", None)
    return {"frechet_distance": distance, "precision": pr["precision"], "recall": pr["recall"], "k": k,
            "class_histogram": histogram, "class_entropy": histogram["entropy_normalised"],
            "class_entropy_nats": histogram["entropy_nats"], "n_samples": len(samples_float),
            "n_reference": len(reference_float), "feature_dim": int(fake_features.shape[1]),
            "judge_test_accuracy": None if accuracy is None else float(accuracy)}

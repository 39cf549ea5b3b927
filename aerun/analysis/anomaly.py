"""Anomaly detection with a trained autoencoder: per-image scores (higher = more anomalous),
the protocols that say which test images are anomalies, AUROC / AUPRC, and the ROC figure.

Protocols: one-class (train on the normal classes only; every other class is an anomaly),
held-out (train on all but some classes; those are the anomalies) and out-of-distribution
(in-distribution test images, then another dataset's). Scores: the reconstruction error, the
negative ELBO (models with a prior), the negative log-density of the code under a Gaussian
mixture fitted to the training codes, and a model's own free energy (energy-based families).
"""

from __future__ import annotations

import numpy as np
import torch

from aerun.errors import UserError


def _labels_and_scores(scores, is_anomaly) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(is_anomaly).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    if y.all() or not y.any():
        raise UserError(f"AUROC needs normal and anomalous images; these {y.size} are all "
                        f"{'anomalies' if y.all() else 'normal'}: check the protocol's classes")
    if not np.isfinite(s).all():
        raise UserError(f"{int((~np.isfinite(s)).sum())} anomaly scores are not finite (NaN or inf)")
    return s, y


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve: the chance an anomaly scores above a normal image."""
    from sklearn.metrics import roc_auc_score

    s, y = _labels_and_scores(scores, is_anomaly)
    return float(roc_auc_score(y, s))


def auprc(scores, is_anomaly) -> float:
    """Average precision (area under precision-recall), anomalies as the positive class."""
    from sklearn.metrics import average_precision_score

    s, y = _labels_and_scores(scores, is_anomaly)
    return float(average_precision_score(y, s))


def roc_curve_points(scores, is_anomaly) -> tuple[list[float], list[float], list[float]]:
    """(false positive rates, true positive rates, thresholds) of the ROC curve's corners."""
    from sklearn.metrics import roc_curve

    s, y = _labels_and_scores(scores, is_anomaly)
    fpr, tpr, thresholds = roc_curve(y, s)
    return fpr.tolist(), tpr.tolist(), np.nan_to_num(thresholds, posinf=np.finfo(np.float64).max).tolist()


def anomaly_report(scores, is_anomaly) -> dict:
    """AUROC, AUPRC, the anomaly fraction (AUPRC's chance level) and the mean scores."""
    s, y = _labels_and_scores(scores, is_anomaly)
    return {"auroc": auroc(s, y), "auprc": auprc(s, y), "n_normal": int((~y).sum()), "n_anomalous": int(y.sum()),
            "anomaly_fraction": float(y.mean()), "mean_score_normal": float(s[~y].mean()),
            "mean_score_anomalous": float(s[y].mean())}


# -- scores ---------------------------------------------------------------------------------
def _batches(model, images, batch_size: int, labels=None):
    """(x [b, C, H, W] float in [0, 1] on the model's device, labels [b] or None) batch by batch;
    `labels` only for a conditional model (uses_labels), which cannot score without them."""
    if getattr(model, "uses_labels", False) and labels is None:
        raise UserError(f"this conditional {type(model).__name__} needs each image's class to score it; "
                        f"pass the labels (or score with an unconditional model)")
    device = next(model.parameters()).device
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(images[start:start + batch_size])
        x = (x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()).to(device)
        y = None if labels is None or not getattr(model, "uses_labels", False) else \
            torch.as_tensor(labels[start:start + batch_size]).long().to(device)
        yield x, y


@torch.no_grad()
def reconstruction_scores(model, images, kind: str = "mse", batch_size: int = 256, labels=None) -> np.ndarray:
    """Per-image reconstruction error [N] (per pixel: MSE, or Bernoulli cross-entropy) of the
    deterministic reconstruction (a VAE's posterior mean); images [N, C, H, W] in [0, 1] or uint8."""
    from aerun import losses

    if kind not in ("mse", "bce"):
        raise UserError(f"unknown reconstruction score {kind!r}; choose mse or bce")
    model.eval()
    out = []
    for x, y in _batches(model, images, batch_size, labels):
        by_class = () if y is None else (y,)  # only conditional models take labels
        # the raw output [b, C, H, W] (logits for sigmoid decoders: a stable BCE)
        raw = model.decode_raw(model.encode(x, *by_class), *by_class)
        out.append(losses.reconstruction_per_image(raw, x, kind, model.output_is_logits).cpu() / x[0].numel())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


@torch.no_grad()
def elbo_scores(model, images, recon_loss: str, batch_size: int = 256, num_samples: int = 1,
                seed: int = 0, labels=None) -> np.ndarray:
    """-ELBO per image [N] in nats: E_q[-log p(x|z)] over `num_samples` seeded posterior draws,
    plus KL(q(z|x) || p(z)) in closed form. Needs a model with a prior (a VAE)."""
    from aerun import losses

    if not getattr(model, "has_prior", False) or not hasattr(model, "posterior"):
        raise UserError(f"score=elbo needs a model with a prior (a VAE); this {type(model).__name__} has none: "
                        f"use score=reconstruction or score=density")
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = []
    for x, y in _batches(model, images, batch_size, labels):
        post = model.posterior(x) if y is None else model.posterior(x, y)
        z = model.sample_posterior(post, num_samples, generator)  # [b, k, D]
        b = x.shape[0]
        y = None if y is None else y.repeat_interleave(num_samples)
        z = z.reshape(b * num_samples, *z.shape[2:])
        raw = model.decode_raw(z) if y is None else model.decode_raw(z, y)  # [b*k, C, H, W]
        target = x.repeat_interleave(num_samples, 0)  # image i's k copies side by side, as z's rows
        nll = losses.decoder_nll_per_image(raw, target, recon_loss, model.output_is_logits).view(b, num_samples)
        out.append((nll.mean(1) + model.kl_to_prior(post)).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def code_density_scores(train_codes, test_codes, components: int = 10, seed: int = 0) -> np.ndarray:
    """-log density [N] of each test code under a full-covariance Gaussian mixture fitted to
    the training codes: an image whose code lies where no training code went is anomalous."""
    from sklearn.mixture import GaussianMixture

    train = np.asarray(train_codes, dtype=np.float64)
    if components < 1 or len(train) < components:
        raise UserError(f"components={components}: needs 1 <= components <= {len(train)} training codes")
    gmm = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(train)
    return -gmm.score_samples(np.asarray(test_codes, dtype=np.float64))


@torch.no_grad()
def free_energy_scores(model, images, batch_size: int = 256) -> np.ndarray:
    """The model's own free energy per image [N] (energy-based families such as an RBM)."""
    if not hasattr(model, "free_energy"):
        raise UserError(f"score=free_energy needs a model with a free energy (an RBM); this "
                        f"{type(model).__name__} has none")
    model.eval()
    out = [model.free_energy(x).float().reshape(-1).cpu() for x, _ in _batches(model, images, batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros(0)


# -- protocols ------------------------------------------------------------------------------
def _classes(classes, n_classes: int | None, what: str) -> np.ndarray:
    chosen = np.unique(np.asarray(list(classes), dtype=np.int64))
    if chosen.size == 0:
        raise UserError(f"{what}: name at least one class")
    if n_classes is not None and (chosen.min() < 0 or chosen.max() >= n_classes):
        raise UserError(f"{what}: classes must lie in 0..{n_classes - 1}, got {chosen.tolist()}")
    if n_classes is not None and chosen.size == n_classes:
        raise UserError(f"{what}: {chosen.tolist()} are all {n_classes} classes, which leaves no other class")
    return chosen


def one_class_labels(test_labels, normal_classes, n_classes: int | None = None) -> np.ndarray:
    """One-class protocol: is_anomaly [N] is True for every class outside `normal_classes`."""
    normal = _classes(normal_classes, n_classes, "normal classes")
    return ~np.isin(np.asarray(test_labels), normal)


def held_out_labels(test_labels, held_out_classes, n_classes: int | None = None) -> np.ndarray:
    """Held-out protocol: is_anomaly [N] is True exactly for the held-out classes."""
    held_out = _classes(held_out_classes, n_classes, "held-out classes")
    return np.isin(np.asarray(test_labels), held_out)


def training_indices(train_labels, is_normal_class) -> np.ndarray:
    """Indices of the training images a protocol trains on: `is_normal_class(labels) -> bool [N]`,
    e.g. lambda y: ~held_out_labels(y, [3])."""
    return np.flatnonzero(is_normal_class(np.asarray(train_labels)))


def ood_labels(n_in: int, n_out: int) -> np.ndarray:
    """Out-of-distribution protocol: n_in in-distribution images, then n_out others (the anomalies)."""
    return np.concatenate([np.zeros(n_in, dtype=bool), np.ones(n_out, dtype=bool)])


# -- figure ---------------------------------------------------------------------------------
def roc_figure(path, curves: dict, title: str) -> None:
    """ROC curves {name: (fpr, tpr, auroc)} with the chance diagonal, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from aerun.io import atomic_path

    fig = Figure(figsize=(4.5, 4.5), dpi=120)  # no pyplot: no global figure state, no GUI backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance (0.500)")
    for name, (fpr, tpr, area) in curves.items():
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} ({area:.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8, title="AUROC", title_fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")

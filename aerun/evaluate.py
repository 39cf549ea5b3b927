"""`aerun evaluate run=<run dir>`: how good a trained model is, in the terms courses and papers use.

Loads the run's best weights and config, reloads its dataset and reports on the test split:
- reconstruction: MSE and BCE per pixel, PSNR (mean over images); for a denoising run also
  the PSNR of the noisy input and of the denoised output against the clean image;
- VAEs: the ELBO and the importance-weighted bound on log p(x) (Burda et al., 2016), in nats
  per image: log p(x) >= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) with z_k ~ q(z|x). The
  bound tightens with K and is never looser than the ELBO, so NLL <= -ELBO;
- a PCA baseline at the same latent size, fitted on the training images (pixels in [0, 1]);
- codes as features for the model and for PCA side by side: a logistic-regression probe
  (training codes -> test accuracy) and the NMI of k-means on the test codes (k = classes);
- code sparsity for deterministic autoencoders.

Everything goes to `evaluation.json` in this command's own run directory; the trained run's
directory is only read. torch and scikit-learn are imported inside functions, so a bad
argument is refused before any slow import.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from aerun.errors import UserError

log = logging.getLogger("aerun.evaluate")

RESULT_FILE = "evaluation.json"
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- CLI hooks
def validate(cfg: DictConfig) -> None:
    """Called by the CLI before Hydra starts: ranges, and a run directory that holds weights."""
    from aerun import runs

    e = cfg.evaluate
    for key, value, low in (("evaluate.iw_samples", e.iw_samples, 1), ("evaluate.iw_chunk", e.iw_chunk, 1),
                            ("evaluate.kmeans_n_init", e.kmeans_n_init, 1), ("batch_size", cfg.batch_size, 1)):
        if value < low:
            raise UserError(f"{key}: must be >= {low}, got {value}")
    for key in ("max_test_samples", "probe_max_train"):
        if e[key] is not None and e[key] < 1:
            raise UserError(f"evaluate.{key}: must be >= 1 or null, got {e[key]}")
    if not e.sparsity_threshold >= 0:
        raise UserError(f"evaluate.sparsity_threshold: must be >= 0, got {e.sparsity_threshold}")
    runs.check_run_dir(cfg.run, key="run", need_checkpoint=runs.WEIGHTS)


def run(cfg: DictConfig):
    """Hydra's task: evaluate, write evaluation.json here, print the table; returns the headline metric."""
    from hydra.core.hydra_config import HydraConfig

    from aerun.config import to_plain
    from aerun.io import write_json

    validate(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    report = evaluate_run(to_plain(cfg))
    path = out_dir / RESULT_FILE
    write_json(path, report)
    print(format_table(report))
    print(f"wrote {path}")
    return report["vae"]["iw_nll"] if "vae" in report else report["reconstruction"]["mse"]


# ----------------------------------------------------------------------------- the evaluation
def evaluate_run(cfg: dict) -> dict:
    """The whole report for `cfg` (a plain evaluate config) as a JSON-ready dict."""
    import torch

    from aerun import runs
    from aerun.data import load_dataset
    from aerun.engine import evaluate as evaluate_split
    from aerun.train import resolve_device

    started = time.time()
    opts = cfg["evaluate"]
    device = resolve_device(cfg["device"])
    loaded = runs.load_run(cfg["run"], device=device)
    model, run_cfg = loaded.model, loaded.config
    d = run_cfg["data"]
    root = runs.data_root(loaded.path, d["root"], cfg["data"]["root"] or None)
    if not Path(str(root)).expanduser().exists():  # a folder, or CIFAR-10's release archive itself
        where = "data.root" if cfg["data"]["root"] else f"the run's data.root ({root})"
        raise UserError(f"{where}: no such directory; pass data.root=<the folder that holds {d['name']}>")
    max_test = opts["max_test_samples"] or d.get("max_test_samples")
    dataset = load_dataset(d["name"], root, download=False, val_size=d["val_size"], seed=run_cfg["seed"],
                           max_train_samples=d.get("max_train_samples"), max_test_samples=max_test).to(device)
    noise = d.get("noise") or {"kind": "none", "level": 0.0}
    recon_loss = loaded.recon_loss
    test, train = dataset.test, dataset.train
    log.info("evaluating %s (%s, latent %d) on %s test: %d images; PCA fitted on %d training images",
             loaded.path, type(model).__name__, model.latent_dim, d["name"], len(test), len(train))

    report = {
        "run": str(loaded.path.resolve()),
        "checkpoint": runs.BEST,
        "best_epoch": loaded.checkpoint.get("best_epoch"),
        "model": type(model).__name__,
        "latent_dim": model.latent_dim,
        "recon_loss": recon_loss,
        "data": {"name": d["name"], "root": str(root), "test_images": len(test), "train_images": len(train),
                 "noise": noise},
    }
    batch = cfg["batch_size"]
    kwargs = dict(batch_size=batch, recon_loss=recon_loss, seed=cfg["seed"])
    clean = evaluate_split(model, test.images, **kwargs)
    report["reconstruction"] = {"mse": clean["mse"], "bce": clean["bce"], "psnr": clean["psnr"]}
    if noise["kind"] != "none":
        noisy = evaluate_split(model, test.images, noise_kind=noise["kind"], noise_level=noise["level"], **kwargs)
        report["denoising"] = {"kind": noise["kind"], "level": noise["level"], "psnr_noisy": noisy["psnr_noisy"],
                               "psnr_denoised": noisy["psnr"], "psnr_gain": noisy["psnr_gain"],
                               "mse_denoised": noisy["mse"]}

    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    test_codes = encode_images(model, test.images, batch)  # [N, D] on the CPU
    if model.is_variational:
        report["vae"] = vae_report(model, test.images, recon_loss, opts["iw_samples"], opts["iw_chunk"], batch,
                                   generator)
        report["vae"]["active_units"] = int((test_codes.var(0) > 0.01).sum())
    else:
        report["sparsity"] = sparsity_stats(model, test_codes, opts["sparsity_threshold"])

    k = min(model.latent_dim, math.prod(dataset.image_shape), len(train))
    pca = fit_pca(train.images, k, batch_size=4 * batch)
    test_flat = flatten(test.images)
    pca_recon = pca.decode(pca.encode(test_flat))
    report["pca"] = {"latent_dim": k, "mse": per_pixel_mse(pca_recon, test_flat).mean().item(),
                     "psnr": psnr(per_pixel_mse(pca_recon, test_flat)).mean().item(),
                     "explained_variance": pca.explained_variance_ratio}
    if k < model.latent_dim:
        report["pca"]["note"] = f"capped at {k}: PCA has at most min(pixels, training images) components"

    # Codes as features: a seeded subset of the training split for the probe, the whole test split.
    n_probe = len(train) if opts["probe_max_train"] is None else min(len(train), opts["probe_max_train"])
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg["seed"]))[:n_probe]
    subset = subset.sort().values.to(device)
    probe_images, probe_labels = train.images[subset], train.labels[subset].cpu().numpy()
    test_labels = test.labels.cpu().numpy()
    n_classes = len(dataset.classes)
    features = {"probe_train_images": n_probe, "n_classes": n_classes}
    for name, train_codes, codes in (
        ("model", encode_images(model, probe_images, batch), test_codes),
        (f"pca", pca.encode(flatten(probe_images)).float().cpu(), pca.encode(test_flat).float().cpu()),
    ):
        features[name] = {
            "probe_accuracy": linear_probe(train_codes.numpy(), probe_labels, codes.numpy(), test_labels, cfg["seed"]),
            "kmeans_nmi": kmeans_nmi(codes.numpy(), test_labels, n_classes, cfg["seed"], opts["kmeans_n_init"]),
        }
    report["features"] = features
    report["settings"] = {k: opts[k] for k in ("iw_samples", "iw_chunk", "probe_max_train", "kmeans_n_init",
                                               "sparsity_threshold")}
    report["settings"]["seed"] = cfg["seed"]
    report["device"] = str(device)
    report["wall_time_s"] = round(time.time() - started, 2)
    return report


# ----------------------------------------------------------------------------- pieces
def flatten(images_uint8):
    """uint8 [N, C, H, W] -> float32 [N, C*H*W] in [0, 1]."""
    return images_uint8.flatten(1).float().div_(255.0)


def per_pixel_mse(recon, target):
    """[N, P], [N, P] -> [N]."""
    return (recon.float() - target.float()).square().mean(1)


def psnr(mse_per_image):
    """dB for images in [0, 1]: -10 log10(MSE), per image."""
    import torch

    return -10 * torch.log10(mse_per_image.clamp_min(1e-10))


def encode_images(model, images_uint8, batch_size: int = 1000):
    """The codes (the mean for VAEs) of uint8 images, [N, D] float32 on the CPU."""
    import torch

    from aerun.engine import to_float

    model.eval()
    with torch.no_grad():
        return torch.cat([model.encode(to_float(images_uint8[i:i + batch_size])).float().cpu()
                          for i in range(0, images_uint8.shape[0], batch_size)])


@dataclass
class PCA:
    """The top-k principal subspace of the training images (pixels in [0, 1])."""

    mean: object  # [P] float64
    components: object  # [P, k] float64, orthonormal columns, by decreasing variance
    explained_variance_ratio: float

    def encode(self, x_flat):
        """[N, P] -> [N, k] coordinates in the subspace."""
        return (x_flat.double() - self.mean) @ self.components

    def decode(self, codes):
        """[N, k] -> [N, P]; not clipped to [0, 1] (the optimal rank-k linear reconstruction)."""
        return codes.double() @ self.components.T + self.mean


def fit_pca(images_uint8, k: int, batch_size: int = 4096) -> PCA:
    """PCA by an eigendecomposition of the pixel covariance, accumulated in float64 batches
    (memory P x P, never N x P in float64)."""
    import torch

    n = images_uint8.shape[0]
    p = images_uint8[0].numel()
    if not 1 <= k <= p:
        raise ValueError(f"PCA needs 1 <= k <= {p} components, got {k}")
    device = images_uint8.device
    total = torch.zeros(p, dtype=torch.float64, device=device)
    for i in range(0, n, batch_size):
        total += flatten(images_uint8[i:i + batch_size]).double().sum(0)
    mean = total / n
    cov = torch.zeros(p, p, dtype=torch.float64, device=device)
    for i in range(0, n, batch_size):
        xc = flatten(images_uint8[i:i + batch_size]).double() - mean  # [b, P]
        cov += xc.T @ xc
    cov /= n
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    total_variance = eigenvalues.sum().item()
    ratio = eigenvalues[:k].sum().item() / total_variance if total_variance > 0 else 1.0
    return PCA(mean, eigenvectors[:, :k].contiguous(), ratio)


def decoder_log_likelihood(raw, target, recon_loss: str):
    """log p(x|z) per image in nats: [B, C, H, W] raw decoder outputs -> [B] (see
    `losses.decoder_nll_per_image` for the likelihood behind each loss)."""
    from aerun import losses

    return -losses.decoder_nll_per_image(raw, target, recon_loss, True)


def importance_weighted_bound(model, x, num_samples: int, chunk: int, recon_loss: str = "bce", generator=None):
    """The K-sample importance-weighted bound for a batch `x` [B, C, H, W] (float in [0, 1]).

    Returns [B] tensors (nats per image): `iw_log_likelihood` = log (1/K) sum_k w_k, with
    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x); `elbo_mc` = mean_k log w_k;
    `elbo` = mean_k log p(x|z_k) - KL(q||p) (the KL in closed form, as in training); `recon`
    and `kl`. By Jensen, iw_log_likelihood >= elbo_mc for every image and every draw.

    At most `chunk` decoded samples exist at once: images are taken chunk // K at a time,
    and when K > chunk the samples of one image are split and merged with logaddexp.
    """
    import torch

    from aerun import losses

    with torch.no_grad():
        mu, logvar = model.encode_stats(x)  # [B, D] each
        mu, logvar = mu.float(), logvar.float()
        std = torch.exp(0.5 * logvar)
        n, dim = mu.shape
        kl = losses.gaussian_kl_per_dim(mu, logvar).sum(1)  # [B]
        lse = torch.full((n,), -math.inf, device=x.device)
        sum_log_w = torch.zeros(n, dtype=torch.float64, device=x.device)
        sum_log_lik = torch.zeros(n, dtype=torch.float64, device=x.device)
        images_per_chunk = max(1, chunk // num_samples)
        samples_per_chunk = min(num_samples, chunk)
        for i in range(0, n, images_per_chunk):
            m, s, lv, xi = (t[i:i + images_per_chunk] for t in (mu, std, logvar, x))
            b = m.shape[0]
            for j in range(0, num_samples, samples_per_chunk):
                k = min(samples_per_chunk, num_samples - j)
                eps = torch.randn(b, k, dim, device=x.device, generator=generator)
                z = m[:, None] + s[:, None] * eps  # [b, k, D]
                raw = model.decode_raw(z.reshape(b * k, dim))  # [b*k, C, H, W]
                target = xi[:, None].expand(b, k, *xi.shape[1:]).reshape(b * k, *xi.shape[1:])
                log_lik = decoder_log_likelihood(raw, target, recon_loss).view(b, k)
                log_prior = -0.5 * (z.square() + LOG_2PI).sum(-1)  # log N(z; 0, I)
                log_posterior = -0.5 * (eps.square() + lv[:, None] + LOG_2PI).sum(-1)  # (z - mu) / std = eps
                log_w = log_lik + log_prior - log_posterior  # [b, k]
                lse[i:i + b] = torch.logaddexp(lse[i:i + b], torch.logsumexp(log_w, 1))
                sum_log_w[i:i + b] += log_w.sum(1).double()
                sum_log_lik[i:i + b] += log_lik.sum(1).double()
        recon = -(sum_log_lik / num_samples).float()
        return {"iw_log_likelihood": lse - math.log(num_samples), "elbo_mc": (sum_log_w / num_samples).float(),
                "elbo": -recon - kl, "recon": recon, "kl": kl}


def vae_report(model, images_uint8, recon_loss: str, num_samples: int, chunk: int, batch_size: int,
               generator) -> dict:
    """Means over the images of the bound's terms; NLL = -iw_log_likelihood, checked against -ELBO."""
    import torch

    from aerun.engine import to_float

    model.eval()
    sums: dict[str, float] = {}
    n = images_uint8.shape[0]
    started = time.time()
    for i in range(0, n, batch_size):
        out = importance_weighted_bound(model, to_float(images_uint8[i:i + batch_size]), num_samples, chunk,
                                        recon_loss, generator)
        for name, value in out.items():
            sums[name] = sums.get(name, 0.0) + value.double().sum().item()
        log.info("importance sampling: %d/%d images, K=%d (%.0f s)", min(n, i + batch_size), n, num_samples,
                 time.time() - started)
    mean = {name: value / n for name, value in sums.items()}
    nll, neg_elbo = -mean["iw_log_likelihood"], -mean["elbo"]
    if not nll <= neg_elbo + 1e-3:
        log.warning("IW-NLL %.3f > -ELBO %.3f: the bound should be tighter; raise evaluate.iw_samples", nll, neg_elbo)
    likelihood = "bernoulli" if recon_loss == "bce" else "gaussian(variance=1/2)"
    return {"elbo": mean["elbo"], "neg_elbo": neg_elbo, "recon": mean["recon"], "kl": mean["kl"],
            "elbo_mc": mean["elbo_mc"], "iw_nll": nll, "iw_samples": num_samples, "iw_gap": neg_elbo - nll,
            "nll_le_neg_elbo": bool(nll <= neg_elbo + 1e-3), "likelihood": likelihood, "units": "nats per image"}


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


# ----------------------------------------------------------------------------- the table
def format_table(report: dict) -> str:
    """A short side-by-side table: the model against PCA at the same size."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    model_name, pca = report["model"], report["pca"]
    feats = report["features"]
    rows = [("MSE per pixel", report["reconstruction"]["mse"], pca["mse"], ".5f"),
            ("PSNR (dB)", report["reconstruction"]["psnr"], pca["psnr"], ".2f"),
            ("BCE per pixel", report["reconstruction"]["bce"], None, ".4f"),
            ("linear probe acc", feats["model"]["probe_accuracy"], feats["pca"]["probe_accuracy"], ".4f"),
            ("k-means NMI", feats["model"]["kmeans_nmi"], feats["pca"]["kmeans_nmi"], ".4f")]
    header = f"PCA-{pca['latent_dim']}"
    lines = [f"{report['run']}: {model_name} (latent {report['latent_dim']}), "
             f"{report['data']['name']} test ({report['data']['test_images']} images)",
             f"  {'':<22}{model_name:>16}{header:>12}"]
    for label, a, b, spec in rows:
        lines.append(f"  {label:<22}{fmt(a, spec):>16}{fmt(b, spec):>12}")
    if "denoising" in report:
        dn = report["denoising"]
        lines.append(f"  denoising ({dn['kind']} {dn['level']:g}): PSNR noisy {dn['psnr_noisy']:.2f} dB -> "
                     f"denoised {dn['psnr_denoised']:.2f} dB ({dn['psnr_gain']:+.2f} dB)")
    if "vae" in report:
        v = report["vae"]
        holds = "holds" if v["nll_le_neg_elbo"] else "VIOLATED"
        lines.append(f"  ELBO {v['elbo']:.2f} nats (recon {v['recon']:.2f} + KL {v['kl']:.2f}); "
                     f"IW-NLL (K={v['iw_samples']}) {v['iw_nll']:.2f} nats; NLL <= -ELBO {holds}; "
                     f"active units {v['active_units']}/{report['latent_dim']}")
    if "sparsity" in report:
        s = report["sparsity"]
        target = f" (target rho {s['target_rho']:g})" if "target_rho" in s else ""
        lines.append(f"  codes: {100 * s['zero_fraction']:.1f}% of entries |z| < {s['threshold']:g}, "
                     f"{s['active_per_code']:.1f} active per code, {s['dead_units']} dead units, "
                     f"mean activation {s['mean_activation']:.4f}{target}")
    return "\n".join(lines)

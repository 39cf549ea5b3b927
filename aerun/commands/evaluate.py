"""`aerun evaluate run=<run dir>`: how good a trained model is, in the terms courses and papers use.

Loads the run's best weights and config, reloads its dataset and reports on the test split:
- reconstruction: MSE and BCE per pixel, PSNR (mean over images); for a denoising run also
  the PSNR of the noisy input and of the denoised output against the clean image;
- models with a prior: the ELBO and the importance-weighted bound on log p(x), in nats per
  image (`aerun.analysis.likelihood`);
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
from pathlib import Path

from omegaconf import DictConfig

from aerun.config import to_plain
from aerun.errors import UserError

log = logging.getLogger("aerun.evaluate")

RESULT_FILE = "evaluation.json"


def validate(cfg: DictConfig) -> None:
    """Called by the CLI before Hydra starts: ranges, and a run directory that holds weights."""
    from aerun.config.validate import at_least
    from aerun.latent.codes import check_common

    at_least(cfg.evaluate, "evaluate.", 1, "iw_samples", "iw_chunk", "kmeans_n_init")
    at_least(cfg.evaluate, "evaluate.", 1, "max_test_samples", "probe_max_train", none_ok=True)
    if not cfg.evaluate.sparsity_threshold >= 0:
        raise UserError(f"evaluate.sparsity_threshold: must be >= 0, got {cfg.evaluate.sparsity_threshold}")
    check_common(cfg)


def run(cfg: DictConfig, job):
    """Evaluate, write evaluation.json here, print the table; returns the headline metric."""
    from aerun.io import write_json

    validate(cfg)
    report = evaluate_run(cfg)
    path = job.out_dir / RESULT_FILE
    write_json(path, report)
    print(format_table(report))
    print(f"wrote {path}")
    return report["vae"]["iw_nll"] if "vae" in report else report["reconstruction"]["mse"]


def evaluate_run(cfg) -> dict:
    """The whole report for `cfg` (an evaluate config) as a JSON-ready dict."""
    from aerun import runs
    from aerun.engine import evaluate as evaluate_split
    from aerun.latent.codes import encode_batches, load_data, load_model

    started = time.time()
    plain = to_plain(cfg)
    opts = plain["evaluate"]
    loaded, device = load_model(cfg)
    model, d = loaded.model, loaded.config["data"]
    dataset = load_data(cfg, loaded, max_test_samples=opts["max_test_samples"]).to(device)
    noise = d.get("noise") or {"kind": "none", "level": 0.0}
    recon_loss, test, train = loaded.recon_loss, dataset.test, dataset.train
    log.info("evaluating %s (%s, latent %d) on %s test: %d images; PCA fitted on %d training images",
             loaded.path, type(model).__name__, model.latent_dim, d["name"], len(test), len(train))
    report = {"run": str(loaded.path.resolve()), "checkpoint": "best.pt",
              "best_epoch": loaded.checkpoint.get("best_epoch"), "model": type(model).__name__,
              "latent_dim": model.latent_dim, "recon_loss": recon_loss,
              "data": {"name": d["name"], "root": runs.data_root(loaded.path, d["root"], cfg.data.root), "test_images": len(test),
                       "train_images": len(train), "noise": noise}}
    kwargs = dict(batch_size=plain["batch_size"], recon_loss=recon_loss, seed=plain["seed"])
    clean = evaluate_split(model, test.images, test.labels, **kwargs)
    report["reconstruction"] = {"mse": clean["mse"], "bce": clean["bce"], "psnr": clean["psnr"]}
    if noise["kind"] != "none":
        noisy = evaluate_split(model, test.images, test.labels, noise_kind=noise["kind"], noise_level=noise["level"],
                               noise_split="test", region_psnr=True, **kwargs)
        report["denoising"] = {"kind": noise["kind"], "level": noise["level"], "psnr_noisy": noisy["psnr_noisy"],
                               "psnr_denoised": noisy["psnr"], "psnr_gain": noisy["psnr_gain"],
                               "mse_denoised": noisy["mse"]}
        if "psnr_region" in noisy:  # watermark: inside the stamps (test words, never trained on) and outside
            report["denoising"].update({k: v for k, v in noisy.items() if k.startswith("psnr_region")
                                        or k.startswith("psnr_outside") or k == "stamped_fraction"})
    test_codes = encode_batches(model, test.images, plain["batch_size"], labels=test.labels)["codes"]  # [N, D] CPU
    if hasattr(model, "posterior"):
        report["vae"] = _likelihood(model, test.images, recon_loss, opts, plain, device, test.labels)
        report["vae"]["active_units"] = int((test_codes.var(0) > 0.01).sum())
    elif hasattr(model, "rbm"):
        report["rbm"] = _rbm_likelihood(model, dataset, opts, plain["seed"])
    elif model.has_prior:  # a DBN: no likelihood bound here (the paper's DBN bound is not implemented)
        log.info("no test log-likelihood for %s: AIS covers a single RBM", type(model).__name__)
    else:
        from aerun.analysis.features import sparsity_stats

        report["sparsity"] = sparsity_stats(model, test_codes, opts["sparsity_threshold"])
    pca = _pca_baseline(report, model.latent_dim, dataset, plain["batch_size"])
    if model.uses_labels:  # a conditional model's code is computed from the label: a probe would read it back
        report["features"] = {"skipped": "the model is conditional: its codes are computed from the labels"}
        log.info("linear probe and k-means skipped: %s", report["features"]["skipped"])
    else:
        report["features"] = _features(model, pca, dataset, test_codes, opts, plain)
    report["settings"] = {k: opts[k] for k in ("iw_samples", "iw_chunk", "probe_max_train", "kmeans_n_init",
                                               "sparsity_threshold")}
    report["settings"]["seed"] = plain["seed"]
    report["device"] = str(device)
    report["wall_time_s"] = round(time.time() - started, 2)
    return report


def _rbm_likelihood(model, dataset, opts: dict, seed: int) -> dict:
    """The test log-likelihood of an RBM: log Z by annealed importance sampling from the data's
    base-rate model, then -F(v) - log Z per binarised test image (a free energy of grey levels is
    not a log-probability, so the test images are sampled once into binary ones, with `seed`)."""
    import torch

    from aerun.analysis.ais import ais_log_partition, base_rate_visible_bias, log_likelihood
    from aerun.engine import to_float

    generator = torch.Generator(device=dataset.test.images.device).manual_seed(seed)
    train = to_float(dataset.train.images)
    started = time.time()
    estimate = ais_log_partition(model, opts["ais_chains"], opts["ais_betas"], base_rate_visible_bias(train),
                                 generator)
    test = torch.bernoulli(to_float(dataset.test.images).flatten(1), generator=generator)
    ll = log_likelihood(model, test, estimate.log_z)
    return {"log_likelihood": ll.mean().item(), "log_z": estimate.log_z, "log_z_std_error": estimate.std_error,
            "ais_chains": opts["ais_chains"], "ais_betas": opts["ais_betas"], "test": "binarised once, seeded",
            "free_energy": model.rbm.free_energy(test).mean().item(), "units": "nats per image",
            "ais_seconds": round(time.time() - started, 1)}


def _likelihood(model, images, recon_loss: str, opts: dict, plain: dict, device, labels=None) -> dict:
    import torch

    from aerun.analysis.likelihood import likelihood_report

    generator = torch.Generator(device=device).manual_seed(plain["seed"])
    return likelihood_report(model, images, recon_loss, opts["iw_samples"], opts["iw_chunk"], plain["batch_size"],
                             generator, labels)


def _pca_baseline(report: dict, latent_dim: int, dataset, batch_size: int):
    """PCA at the model's latent size (capped at what PCA can have), fitted on the training images."""
    from aerun.analysis.pca import fit_pca, flatten, per_pixel_mse
    from aerun.models.base import psnr

    train, test = dataset.train, dataset.test
    k = min(latent_dim, math.prod(dataset.image_shape), len(train))
    pca = fit_pca(train.images, k, batch_size=4 * batch_size)
    test_flat = flatten(test.images)
    error = per_pixel_mse(pca.decode(pca.encode(test_flat)), test_flat)
    report["pca"] = {"latent_dim": k, "mse": error.mean().item(), "psnr": psnr(error).mean().item(),
                     "explained_variance": pca.explained_variance_ratio}
    if k < latent_dim:
        report["pca"]["note"] = f"capped at {k}: PCA has at most min(pixels, training images) components"
    return pca


def _features(model, pca, dataset, test_codes, opts: dict, plain: dict) -> dict:
    """The model's codes and PCA's side by side: a linear probe and k-means NMI. The probe trains
    on a seeded subset of the training split and is scored on the whole test split. Without
    labels both are skipped, and the entry's `skipped` says why."""
    import torch

    from aerun.analysis.features import kmeans_nmi, linear_probe
    from aerun.analysis.pca import flatten
    from aerun.latent.codes import encode_batches

    train, test, seed = dataset.train, dataset.test, plain["seed"]
    if not dataset.has_labels:  # probe accuracy and NMI measure codes against classes
        reason = "the data has no labels: no linear probe, no k-means NMI"
        log.info("features: %s", reason)
        skipped = {"probe_accuracy": None, "kmeans_nmi": None}
        return {"skipped": reason, "probe_train_images": 0, "n_classes": 0, "model": dict(skipped),
                "pca": dict(skipped)}
    n_probe = len(train) if opts["probe_max_train"] is None else min(len(train), opts["probe_max_train"])
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n_probe]
    subset = subset.sort().values.to(train.images.device)
    probe_images, probe_labels = train.images[subset], train.labels[subset].cpu().numpy()
    test_labels = test.labels.cpu().numpy()
    n_classes = len(dataset.classes)
    features = {"probe_train_images": n_probe, "n_classes": n_classes}
    test_flat = flatten(test.images)
    for name, train_codes, codes in (
        ("model", encode_batches(model, probe_images, plain["batch_size"])["codes"], test_codes),
        ("pca", pca.encode(flatten(probe_images)).float().cpu(), pca.encode(test_flat).float().cpu()),
    ):
        features[name] = {
            "probe_accuracy": linear_probe(train_codes.numpy(), probe_labels, codes.numpy(), test_labels, seed),
            "kmeans_nmi": kmeans_nmi(codes.numpy(), test_labels, n_classes, seed, opts["kmeans_n_init"]),
        }
    return features


def format_table(report: dict) -> str:
    """A short side-by-side table: the model against PCA at the same size."""
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    model_name, pca = report["model"], report["pca"]
    feats = report["features"]
    none = {"probe_accuracy": None, "kmeans_nmi": None}
    feats = {"model": feats.get("model", none), "pca": feats.get("pca", none)}
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
        if dn.get("psnr_region") is not None:
            lines.append(f"  inside the stamps ({100 * dn['stamped_fraction']:.1f}% of pixels): PSNR "
                         f"{dn['psnr_region_noisy']:.2f} -> {dn['psnr_region']:.2f} dB; outside them "
                         f"{dn['psnr_outside']:.2f} dB (the stamps leave those pixels as they were)")
    if "rbm" in report:
        r = report["rbm"]
        lines.append(f"  log-likelihood {r['log_likelihood']:.2f} nats (binarised test images; AIS log Z "
                     f"{r['log_z']:.2f} +- {r['log_z_std_error']:.3f}, {r['ais_chains']} chains x {r['ais_betas']} betas)")
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
